"""API keys (``Authorization: Bearer <key>``): a key is an owner; owners see only their jobs.

With no keys configured, requests are served unauthenticated, as owner ``anonymous``, from
loopback clients only.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from rerankd.api.errors import ApiError

ANONYMOUS = "anonymous"


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

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

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
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        token = token.strip()
        for key, name in self.keys.items():
            if hmac.compare_digest(key.encode(), token.encode()):
                return name
        raise ApiError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
