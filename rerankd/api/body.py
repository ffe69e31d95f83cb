"""Request bodies checked before any parser sees them: size, read time, encoding, JSON nesting
depth and integer length.

:class:`BodyGuardMiddleware` reads the body (to its limit), then answers 413/422 in the error
shape of :mod:`rerankd.api.errors`, naming the limit, or hands the whole body on to the app.
An over-limit body is drained (up to a bound) so the keep-alive connection stays usable.  A
client that stops sending before the end of its body gets 408 after RERANKD_BODY_TIMEOUT_S and
the connection is closed (uvicorn itself would wait forever).  An integer literal longer than
:data:`MAX_INT_DIGITS` is refused naming its field (:func:`long_integer`, also used for batch
lines): Python's parser would fail on 4,300 digits with a 400 that names nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.api.errors import default_code, error_body, limit_message
from rerankd.config import Settings

__all__ = [
    "JSON_PATHS",
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "BodyGuardMiddleware",
    "integer_message",
    "json_depth",
    "json_encoding_error",
    "long_integer",
]

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects a JSON body may have (ours need 4)."""

MAX_INT_DIGITS = 18
"""Digits of an integer in a JSON body (every such integer fits in 64 bits; ours need at most 7)."""

JSON_PATHS = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/v1/jobs"})
"""The routes whose body is one JSON document (batch files are checked line by line)."""

_DRAIN_BYTES = 16 * 1024 * 1024  # read at most this much past a limit before closing instead
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")
_LONG_DIGITS = re.compile(rb"\d{%d}" % (MAX_INT_DIGITS + 1))
_BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32LE"),
    (codecs.BOM_UTF32_BE, "UTF-32BE"),
    (codecs.BOM_UTF8, "UTF-8 with a byte order mark"),
    (codecs.BOM_UTF16_LE, "UTF-16LE"),
    (codecs.BOM_UTF16_BE, "UTF-16BE"),
]


def json_depth(data: bytes, limit: int) -> int:
    """The nesting depth of the JSON text ``data`` (strings skipped) if above ``limit``, else at most ``limit``."""
    openers = data.count(b"[") + data.count(b"{")
    if openers <= limit:  # cannot nest deeper than it has openers
        return openers
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def json_encoding_error(data: bytes, content_type: str) -> str | None:
    """Why ``data`` is not a UTF-8 JSON text (naming its encoding), or ``None``."""
    charset = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.I)
    if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        return f"body: charset={charset.group(1)} is not supported; JSON bodies must be UTF-8 (RFC 8259)"
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"body: the JSON text is {name}; send UTF-8 without a byte order mark"
    if len(data) >= 2 and (data[0] == 0 or data[1] == 0):
        name = "UTF-32" if len(data) >= 4 and data[1:3] == b"\0\0" else "UTF-16"
        return f"body: the JSON text looks {name}{'BE' if data[0] == 0 else 'LE'}-encoded; send UTF-8"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"body: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); JSON bodies must be UTF-8"
    return None


class _LongInt:
    """Stands, in a parsed body, for an integer literal of more than :data:`MAX_INT_DIGITS` digits."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _LongInt:
    digits = len(text) - text.startswith("-")
    return _LongInt(digits) if digits > MAX_INT_DIGITS else int(text)


def _find_long(value: Any, path: tuple[str, ...]) -> tuple[str, int] | None:
    if isinstance(value, _LongInt):
        return ".".join(path) or "body", value.digits
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _find_long(item, (*path, str(key)))
        if found is not None:
            return found
    return None


def long_integer(data: bytes | str) -> tuple[str, int] | None:
    """``(field, digits)`` of the first integer literal of the JSON text ``data`` with more than
    :data:`MAX_INT_DIGITS` digits (field dotted as in validation errors: ``top_n``,
    ``candidates.0.x``), else ``None`` (also for text that is not JSON: its parser says why)."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:  # cheap: no run of that many digits anywhere
        return None
    try:
        parsed = json.loads(data, parse_int=_parse_int)
    except (ValueError, RecursionError):
        return None
    return _find_long(parsed, ())


def integer_message(field: str, digits: int) -> str:
    """E.g. ``top_n: an integer of 5000 digits exceeds the limit of 18 digits``."""
    return f"{field}: an integer of {digits} digits exceeds the limit of {MAX_INT_DIGITS} digits"


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k == name:
            return bytes(v).decode("latin-1")
    return ""


class BodyGuardMiddleware:
    """413 over the body limit (by Content-Length or while reading); 422 for a JSON body that is
    not UTF-8 or nests deeper than :data:`MAX_JSON_DEPTH`.  Batch uploads (``/v1/batches``) have
    their own, larger limit and are checked line by line later."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, path: str) -> tuple[int, str]:
        if path.startswith("/v1/batches"):
            return self.settings.max_batch_bytes, "RERANKD_MAX_BATCH_BYTES"
        return self.settings.max_body_bytes, "RERANKD_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit, setting = self._limit(path)
        length = _header(scope, b"content-length")
        timeout = self.settings.body_timeout_s
        if length.isdigit() and int(length) > limit:
            cap = limit + _DRAIN_BYTES
            drained = int(length) <= cap and await _drain(receive, 0, cap, timeout)
            text = limit_message("body", int(length), "bytes", limit, setting)
            await _reply(send, 413, text, close=not drained, limit=limit, setting=setting)
            return
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await _within(receive, timeout)
            if message is None:
                await _stalled(send, timeout, seen)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            more = bool(message.get("more_body", False))
            if seen > limit:
                drained = not more or await _drain(receive, seen, limit + _DRAIN_BYTES, timeout)
                text = limit_message("body", seen, "bytes", limit, setting)
                await _reply(send, 413, text, close=not drained, limit=limit, setting=setting)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        ctype = _header(scope, b"content-type").lower()
        if body and path in JSON_PATHS and ("json" in ctype or not ctype):
            problem = json_encoding_error(body, ctype)
            if problem is not None:
                await _reply(send, 422, problem, code="invalid_encoding")
                return
            if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                text = f"body: JSON nested deeper than the limit of {MAX_JSON_DEPTH} levels"
                await _reply(send, 422, text, code="too_deep", limit=MAX_JSON_DEPTH)
                return
            found = long_integer(body)
            if found is not None:
                text = integer_message(*found)
                await _reply(send, 422, text, code="over_limit", field=found[0], limit=MAX_INT_DIGITS)
                return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _within(receive: Receive, timeout: float) -> Message | None:
    """The next message, or ``None`` when the client sent nothing for ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        return None


async def _stalled(send: Send, timeout: int, seen: int) -> None:
    text = f"body: no data for {timeout} s after {seen} bytes, before the body's end (RERANKD_BODY_TIMEOUT_S)"
    await _reply(send, 408, text, close=True, limit=timeout, setting="RERANKD_BODY_TIMEOUT_S")


async def _drain(receive: Receive, seen: int, cap: int, timeout: float) -> bool:
    """Read and drop the rest of a body; ``False`` if it goes past ``cap`` bytes, stalls for
    ``timeout`` seconds or the client left."""
    while seen <= cap:
        message = await _within(receive, timeout)
        if message is None or message["type"] == "http.disconnect":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def _reply(
    send: Send,
    status: int,
    message: str,
    close: bool = False,
    code: str | None = None,
    limit: int | None = None,
    setting: str | None = None,
    field: str = "body",
) -> None:
    code = code or default_code(status)
    body = json.dumps(error_body(message, code, field=field, limit=limit, setting=setting)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
