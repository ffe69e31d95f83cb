"""Cohere's rerank shape (v1 and v2): request model, conversion to ours, response.

Request: ``model``, ``query``, ``documents`` (strings or objects with ``text``; v1's
``rank_fields`` picks the fields of object documents, rendered ``field: value`` per line),
``top_n``, ``return_documents``, ``max_tokens_per_doc``.  ``max_tokens_per_doc`` is applied
approximately, as whitespace-separated words (a word is at least one token); the engine's
own token budgeting still applies.  ``priority`` is accepted (all jobs share one FIFO
queue per model); ``max_chunks_per_doc`` and ``relevant_spans`` are rejected with 422
rather than silently ignored.

Response: ``id`` (the job id), ``results`` best first, each ``{index, relevance_score}`` and
``document`` (``{"text": ...}`` or the object sent) when ``return_documents`` is true, and
``meta`` (``api_version``, ``billed_units.search_units`` = one per 100 documents,
``tokens``, ``warnings``).  ``relevance_score`` is the strategy's score (see
:mod:`rerankd.types`), min-max scaled into [0, 1] when it falls outside.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rerankd.api.errors import ApiError
from rerankd.types import Candidate, Query, RerankRequest, RerankResult, StrategyConfig


class CohereRerankRequest(BaseModel):
    """The body of ``POST /v1/rerank`` and ``POST /v2/rerank``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    relevant_spans: Any = None
    priority: int | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> CohereRerankRequest:
        for name in ("max_chunks_per_doc", "relevant_spans"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} is not supported by rerankd; leave it unset")
        return self


def document_text(doc: str | dict[str, Any], index: int, rank_fields: list[str] | None) -> str:
    """The text a document is ranked by."""
    if isinstance(doc, str):
        return doc
    if rank_fields:
        missing = [f for f in rank_fields if f not in doc]
        if missing:
            raise ApiError(422, f"documents[{index}]: missing rank field(s) {missing}")
        return "\n".join(f"{f}: {doc[f]}" for f in rank_fields)
    text = doc.get("text")
    if not isinstance(text, str):
        raise ApiError(422, f"documents[{index}]: an object document needs a 'text' string (or use rank_fields)")
    return text


def texts_of(body: CohereRerankRequest) -> list[str]:
    return [document_text(d, i, body.rank_fields) for i, d in enumerate(body.documents)]


def truncate_words(text: str, max_words: int | None) -> str:
    if max_words is None:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def to_request(body: CohereRerankRequest, texts: list[str], strategy: StrategyConfig) -> RerankRequest:
    """Our request: candidate ``docid`` is the document's index."""
    candidates = [Candidate(docid=str(i), text=truncate_words(t, body.max_tokens_per_doc)) for i, t in enumerate(texts)]
    return RerankRequest(query=Query(text=body.query), candidates=candidates, strategy=strategy, top_n=body.top_n)


def _scaled(scores: list[float]) -> list[float]:
    if all(0.0 <= s <= 1.0 for s in scores):
        return scores
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0 for _ in scores]
    return [(s - lo) / (hi - lo) for s in scores]


def response(job_id: str, body: CohereRerankRequest, result: RerankResult | None, api_version: str) -> dict[str, Any]:
    """The Cohere-shaped answer for a finished job (``result=None``: no documents)."""
    results: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "api_version": {"version": api_version},
        "billed_units": {"search_units": max(1, -(-len(body.documents) // 100)) if body.documents else 0},
    }
    if result is not None:
        ranking = result.ranking[: body.top_n] if body.top_n else result.ranking
        scores = _scaled([d.score for d in ranking]) if ranking else []
        for doc, score in zip(ranking, scores, strict=False):
            idx = int(doc.docid)
            item: dict[str, Any] = {"index": idx, "relevance_score": score}
            if body.return_documents:
                original = body.documents[idx]
                item["document"] = {"text": original} if isinstance(original, str) else original
            results.append(item)
        meta["tokens"] = {
            "input_tokens": result.usage.prompt_tokens,
            "output_tokens": result.usage.completion_tokens,
        }
        meta["billed_units"]["input_tokens"] = result.usage.prompt_tokens
        meta["billed_units"]["output_tokens"] = result.usage.completion_tokens
        if result.warnings:
            meta["warnings"] = result.warnings
    return {"id": job_id, "results": results, "meta": meta}
