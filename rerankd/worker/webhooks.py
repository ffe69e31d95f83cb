"""Job callbacks signed as Standard Webhooks do (https://www.standardwebhooks.com).

Headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``).  A ``whsec_``-prefixed secret is
base64; any other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["deliver", "secret_bytes", "sign", "verify"]

log = logging.getLogger(__name__)


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a webhook secret."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a message."""
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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


async def deliver(
    url: str,
    event_type: str,
    data: dict[str, Any],
    *,
    secret: str,
    msg_id: str,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 10.0,
    client: httpx.AsyncClient | None = None,
) -> str:
    """POST a signed event to ``url``, retrying 5xx/429/network errors with exponential backoff.

    Returns a short status (``delivered (HTTP 200) after 1 attempt(s)`` or ``failed: ...``).
    The same ``webhook-id`` is used for every retry so receivers can deduplicate.
    """
    body = json.dumps(
        {"type": event_type, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data},
        separators=(",", ":"),
    ).encode()
    own = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    last = "no attempt"
    try:
        for attempt in range(1, max_attempts + 1):
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(secret, msg_id, ts, body),
            }
            try:
                resp = await http.post(url, content=body, headers=headers)
                if 200 <= resp.status_code < 300:
                    return f"delivered (HTTP {resp.status_code}) after {attempt} attempt(s)"
                last = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 425, 429):
                    break  # the receiver rejects it; retrying will not help
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < max_attempts:
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        log.warning("callback %s to %s failed: %s", msg_id, url, last)
        return f"failed after {attempt} attempt(s): {last}"
    finally:
        if own:
            await http.aclose()
