"""Request limits: documents per request, characters per document and query (body size: :mod:`.body`)."""

from __future__ import annotations

from collections.abc import Sequence

from rerankd.api.errors import LimitError
from rerankd.config import Settings


def check_request(settings: Settings, query: str, documents: Sequence[str], field: str = "documents") -> None:
    """Raise :class:`LimitError` for the first limit ``query``/``documents`` break."""
    if len(documents) > settings.max_documents:
        raise LimitError.over(413, field, len(documents), "documents", settings.max_documents, "RERANKD_MAX_DOCUMENTS")
    if len(query) > settings.max_query_chars:
        raise LimitError.over(
            422, "query", len(query), "characters", settings.max_query_chars, "RERANKD_MAX_QUERY_CHARS"
        )
    for i, doc in enumerate(documents):
        if len(doc) > settings.max_document_chars:
            raise LimitError.over(
                422, f"{field}[{i}]", len(doc), "characters", settings.max_document_chars, "RERANKD_MAX_DOCUMENT_CHARS"
            )
