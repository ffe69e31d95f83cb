"""Size limits of the request fields that :func:`rerankd.api.limits.check_request` does not cover:
ids, titles, feedback vectors, ``max_tokens_per_doc``, batch ``custom_id`` and the string
fields of Cohere object documents.  Each breach is a 422 naming the field, the limit and its
setting (strategy settings such as ``window_size`` are bounded in :mod:`rerankd.types`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rerankd.api.errors import LimitError
from rerankd.config import Settings
from rerankd.types import RerankRequest


def _chars(what: str, value: str | None, limit: int, setting: str) -> None:
    if value is not None and len(value) > limit:
        raise LimitError.over(422, what, len(value), "characters", limit, setting)


def check_fields(settings: Settings, req: RerankRequest, where: str = "") -> None:
    """Raise :class:`LimitError` for the first field of ``req`` over its size limit
    (``where``: a prefix for the field names, e.g. ``line 3: ``)."""
    _chars(f"{where}query.qid", req.query.qid, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")
    for i, c in enumerate(req.candidates):
        _chars(f"{where}candidates[{i}].docid", c.docid, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")
        _chars(f"{where}candidates[{i}].title", c.title, settings.max_title_chars, "RERANKD_MAX_TITLE_CHARS")
    if req.feedback is not None:
        dims = len(req.feedback.query_vector)
        if dims > settings.max_feedback_dimensions:
            raise LimitError.over(
                422,
                f"{where}feedback.query_vector",
                dims,
                "dimensions",
                settings.max_feedback_dimensions,
                "RERANKD_MAX_FEEDBACK_DIMENSIONS",
            )
    check_max_tokens(settings, req.max_tokens_per_doc, f"{where}max_tokens_per_doc")


def check_max_tokens(settings: Settings, value: int | None, what: str = "max_tokens_per_doc") -> None:
    if value is not None and value > settings.max_tokens_per_doc:
        raise LimitError.over(422, what, value, "tokens", settings.max_tokens_per_doc, "RERANKD_MAX_TOKENS_PER_DOC")


def check_custom_id(settings: Settings, custom_id: str, where: str = "") -> None:
    _chars(f"{where}custom_id", custom_id, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")


def check_documents(settings: Settings, documents: Sequence[str | Mapping[str, Any]]) -> None:
    """Cohere documents: every string field of an object document is bounded like a text."""
    for i, doc in enumerate(documents):
        if isinstance(doc, Mapping):
            for key, value in doc.items():
                if isinstance(value, str):
                    _chars(f"documents[{i}].{key}", value, settings.max_document_chars, "RERANKD_MAX_DOCUMENT_CHARS")
