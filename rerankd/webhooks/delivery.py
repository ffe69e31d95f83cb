"""One delivery attempt: POST a signed event to a checked :class:`~rerankd.webhooks.egress.Target`.

The connection goes to one of the target's checked addresses (the URL's host is replaced by the
address), with the original ``Host`` header and, for https, TLS SNI and certificate verification
on the host name (httpx's ``sni_hostname`` request extension).  Redirects are never followed, no
proxy from the environment is used, and the response body is not read.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from rerankd.webhooks.egress import Target
from rerankd.webhooks.signing import signature_header

__all__ = ["USER_AGENT", "event_body", "post_signed"]

USER_AGENT = "rerankd-webhooks/1"


def event_body(event_type: str, occurred_at: float, data: Mapping[str, Any]) -> bytes:
    """The Standard Webhooks payload ``{"type", "timestamp", "data"}`` (the same bytes on every retry)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(occurred_at))
    return json.dumps({"type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":")).encode()


async def post_signed(
    target: Target,
    body: bytes,
    *,
    msg_id: str,
    secrets: Sequence[str],
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
) -> int:
    """POST ``body`` signed with every secret; returns the HTTP status.  Raises ``httpx.HTTPError``
    when no checked address answers.  ``transport`` and ``verify`` (trusted CAs) are for tests."""
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets, msg_id, ts, body),
    }
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
    last: httpx.HTTPError | None = None
    async with httpx.AsyncClient(
        timeout=timeout_s, follow_redirects=False, trust_env=False, transport=transport, verify=verify
    ) as http:
        for address in target.addresses:
            request = http.build_request(
                "POST", target.pinned_url(address), content=body, headers=headers, extensions=extensions
            )
            try:
                response = await http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e  # try the next checked address
                continue
            await response.aclose()
            return response.status_code
    assert last is not None
    raise last
