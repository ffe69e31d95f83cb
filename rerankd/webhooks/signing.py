"""Callbacks signed as Standard Webhooks do (https://www.standardwebhooks.com), one secret per key.

Headers ``webhook-id`` (stable across retries of one event), ``webhook-timestamp`` (unix seconds
of the attempt) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` entries, one per active secret of the job's API key (two during a
rotation, so receivers holding either secret verify).

Secrets: ``RERANKD_WEBHOOK_SECRETS`` maps API key names (those of ``RERANKD_API_KEYS``) to one
secret or a list of two (``{"alice": ["whsec_new", "whsec_old"]}``); each is ``whsec_`` and the
base64 of 24 to 64 random bytes.  ``RERANKD_WEBHOOK_SECRET`` is the fallback of keys without an
entry (a secret all those keys share; ``whsec_<base64>`` or plain text, used as its UTF-8 bytes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

__all__ = ["SecretBook", "secret_bytes", "sign", "signature_header", "verify"]


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a webhook secret."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300.0) -> bool:
    """Check a delivery's signature and timestamp (what a receiver does)."""
    try:
        msg_id = headers["webhook-id"]
        ts = int(headers["webhook-timestamp"])
        sigs = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(expected, s) for s in sigs)


class SecretBook:
    """The active secrets of each API key name, with the shared fallback."""

    def __init__(self, per_key: Mapping[str, Sequence[str]], fallback: str | None = None) -> None:
        self.per_key = {name: tuple(secrets) for name, secrets in per_key.items()}
        self.fallback = fallback

    def for_owner(self, owner: str) -> tuple[str, ...]:
        """The secrets that sign ``owner``'s callbacks (empty: none configured)."""
        own = self.per_key.get(owner)
        if own:
            return own
        return (self.fallback,) if self.fallback else ()
