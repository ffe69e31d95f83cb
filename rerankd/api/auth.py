"""API keys (``Authorization: Bearer <key>``): a key is an owner; owners see only their jobs.

With no keys configured, requests are served unauthenticated, as owner ``anonymous``, from
loopback clients only.  ``GET /metrics`` (:meth:`Authenticator.metrics_owner`) also takes the
metrics key (``RERANKD_METRICS_KEY``), which sees every tenant's series; an API key sees its own.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from rerankd.api.errors import ApiError

ANONYMOUS = "anonymous"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Maps a request to its owner name or raises 401."""

    def __init__(self, keys: dict[str, str], metrics_key: str | None = None) -> None:
        self.keys = keys
        self.metrics_key = metrics_key.strip() if metrics_key and metrics_key.strip() else None

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def metrics_owner(self, request: Request) -> str | None:
        """Who reads ``/metrics``: ``None`` for every tenant's series (the metrics key, or a loopback
        client when no API keys are configured, as the rest of the API), else the API key's owner,
        who sees only its own; 401 otherwise."""
        token = _bearer(request)
        if self.metrics_key is not None and token:
            if hmac.compare_digest(self.metrics_key.encode(), token.encode()):
                return None
            if not self.keys:
                raise ApiError(401, "invalid metrics key (RERANKD_METRICS_KEY)", _CHALLENGE)
        if self.keys:
            return self.owner(request)
        if self.metrics_key is not None and not is_loopback(request.client.host if request.client else None):
            raise ApiError(401, "missing metrics key: send 'Authorization: Bearer <RERANKD_METRICS_KEY>'", _CHALLENGE)
        self.owner(request)  # no keys at all: loopback clients only, as every route
        return None

    def owner(self, request: Request) -> str:
        if not self.keys:
            client = request.client.host if request.client else None
            if not is_loopback(client):
                raise ApiError(
                    401,
                    "no API keys are configured (RERANKD_API_KEYS): unauthenticated requests are "
                    f"served from loopback only, not from {client}",
                )
            return ANONYMOUS
        token = _bearer(request)
        if not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", _CHALLENGE)
        for key, name in self.keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return name
        raise ApiError(401, "invalid API key", _CHALLENGE)


def _bearer(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>`` ("" without one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
