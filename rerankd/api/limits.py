"""Request limits: documents per request, characters per document and query, body size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.api.errors import LimitError, limit_message
from rerankd.config import Settings


def check_request(settings: Settings, query: str, documents: Sequence[str], field: str = "documents") -> None:
    """Raise :class:`LimitError` for the first limit ``query``/``documents`` break."""
    if len(documents) > settings.max_documents:
        raise LimitError(
            413,
            limit_message(field, len(documents), "documents", settings.max_documents, "RERANKD_MAX_DOCUMENTS"),
        )
    if len(query) > settings.max_query_chars:
        raise LimitError(
            422,
            limit_message("query", len(query), "characters", settings.max_query_chars, "RERANKD_MAX_QUERY_CHARS"),
        )
    for i, doc in enumerate(documents):
        if len(doc) > settings.max_document_chars:
            raise LimitError(
                422,
                limit_message(
                    f"{field}[{i}]",
                    len(doc),
                    "characters",
                    settings.max_document_chars,
                    "RERANKD_MAX_DOCUMENT_CHARS",
                ),
            )


class BodyLimitMiddleware:
    """Answer 413 when a request body exceeds its limit (by Content-Length or while streaming).

    Batch uploads (``/v1/batches``) have their own, larger limit.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, path: str) -> tuple[int, str]:
        if path.startswith("/v1/batches"):
            return self.settings.max_batch_bytes, "RERANKD_MAX_BATCH_BYTES"
        return self.settings.max_body_bytes, "RERANKD_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = 0
                if size > limit:
                    await _reject(send, limit_message("body", size, "bytes", limit, setting))
                    return
        seen = 0
        sent_start = False

        async def guarded_send(message: Message) -> None:
            nonlocal sent_start
            if message["type"] == "http.response.start":
                sent_start = True
            await send(message)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit_message("body", seen, "bytes", limit, setting))
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge as e:
            if not sent_start:
                await _reject(send, str(e))


class _TooLarge(Exception):
    pass


async def _reject(send: Send, message: str) -> None:
    import json

    body = json.dumps({"message": message}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
