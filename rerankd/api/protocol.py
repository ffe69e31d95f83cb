"""uvicorn's HTTP protocols with the API's error shape for requests they refuse themselves.

A request uvicorn's parser cannot take (a malformed ``Content-Length`` or ``Transfer-Encoding``, a
bad request line) never reaches the app: uvicorn answers a plain-text 400 ("Invalid HTTP request
received.") from ``send_400_response``.  :class:`H11Protocol` and :class:`HttpToolsProtocol`
override only that method (uvicorn's extension point: a protocol class passed as ``http=``) to
answer :class:`~rerankd.api.errors.ErrorBody`, naming the header when the parser's reason does.
Every way the API is started (``python -m rerankd.api``, which ``rerankd up``, the launchers and
the test stacks run) passes :func:`http_protocol`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11

from rerankd.api.errors import error_body

__all__ = ["H11Protocol", "HttpToolsProtocol", "bad_request_body", "http_protocol"]

log = logging.getLogger(__name__)

_HEADERS = (
    ("content-length", "Content-Length"),
    ("transfer-encoding", "Transfer-Encoding"),
    ("chunk", "Transfer-Encoding"),
)


def bad_request_body(reason: str) -> dict[str, Any]:
    """The error body for a request the HTTP parser refused for ``reason`` (its exception text)."""
    reason = reason.strip().rstrip(".")[:200] or "malformed request"  # h11 quotes the bytes it refused
    lowered = reason.lower()
    header = next((name for key, name in _HEADERS if key in lowered), None)
    if header is None:
        return error_body(f"invalid HTTP request: {reason}", "bad_request")
    return error_body(f"{header}: invalid header ({reason})", "invalid_header", field=header)


def _send_json_400(protocol: Any) -> None:
    """Write the 400 and close, as uvicorn's ``send_400_response`` (called inside its ``except``)."""
    exc = sys.exc_info()[1]
    body = json.dumps(bad_request_body(str(exc) if exc is not None else "")).encode()
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in protocol.server_state.default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    transport: asyncio.Transport = protocol.transport
    transport.write(b"".join(head) + body)
    transport.close()


class H11Protocol(_H11):
    """uvicorn's h11 protocol; its 400 in the API's error shape."""

    def send_400_response(self, msg: str) -> None:
        _send_json_400(self)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools
except ImportError:  # uvicorn without httptools (not the [standard] extra)
    HttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _JsonHttpTools(_HttpTools):
        """uvicorn's httptools protocol; its 400 in the API's error shape."""

        def send_400_response(self, msg: str) -> None:
            _send_json_400(self)

    HttpToolsProtocol = _JsonHttpTools


def http_protocol() -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``: httptools when installed (uvicorn's
    ``auto`` choice), else h11."""
    return HttpToolsProtocol or H11Protocol
