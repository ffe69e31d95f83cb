"""Cohere's rerank shape (v1 and v2): request model, conversion to ours, response.

Request: ``model``, ``query``, ``documents`` (strings or objects with ``text``; v1's
``rank_fields`` picks the fields of object documents, rendered ``field: value`` per line),
``top_n``, ``return_documents``, ``max_tokens_per_doc``, ``priority``.  ``max_tokens_per_doc``
travels with the job and the worker cuts each document to that many tokens of the model's own
tokenizer (:mod:`rerankd.strategies.truncate`).  ``priority`` (0-999, 0 the highest and the
default, as Cohere defines it) picks the queue lane: 0 runs on the interactive lane, 1-999 on
the low lane, which workers serve only when no priority-0 work waits (and before batches; see
:mod:`rerankd.jobs.quotas`).  ``max_chunks_per_doc`` and ``relevant_spans`` are rejected with
422 rather than silently ignored.

Response: ``id`` (the job id), ``results`` best first, each ``{index, relevance_score}`` and
``document`` (``{"text": ...}`` or the object sent) when ``return_documents`` is true, and
``meta`` (``api_version``, ``billed_units.search_units`` = one per 100 documents,
``tokens``, ``warnings``).  ``relevance_score`` has one meaning for every strategy and request:
:func:`relevance_score`, ``1 - (rank - 1) / n`` for the document's final rank among the ``n``
documents sent (1.0 for the best; it does not depend on ``top_n``).  It is a position, not a
calibrated probability; the strategy's own score is ``RankedDoc.score`` in ``/v1/jobs`` results.
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
    max_tokens_per_doc: int | None = Field(
        default=None, ge=1, description="Cut each document to this many tokens of the model's tokenizer."
    )
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    relevant_spans: Any = None
    priority: int | None = Field(
        default=None,
        ge=0,
        le=999,
        description="0 (highest, the default) to 999: 0 runs on the interactive lane, 1-999 on the low lane, "
        "served when no priority-0 work waits (still before batch jobs).",
    )

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


def to_request(body: CohereRerankRequest, texts: list[str], strategy: StrategyConfig) -> RerankRequest:
    """Our request: candidate ``docid`` is the document's index."""
    candidates = [Candidate(docid=str(i), text=t) for i, t in enumerate(texts)]
    return RerankRequest(
        query=Query(text=body.query),
        candidates=candidates,
        strategy=strategy,
        top_n=body.top_n,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )


def relevance_score(rank: int, n: int) -> float:
    """Cohere's ``relevance_score`` of the document at final ``rank`` (1-based) among ``n`` sent:
    ``1 - (rank - 1) / n``, in (0, 1], 1.0 for the best, the same map for every strategy and
    independent of ``top_n`` and of the strategy's score scale."""
    return 1.0 - (rank - 1) / n


def response(job_id: str, body: CohereRerankRequest, result: RerankResult | None, api_version: str) -> dict[str, Any]:
    """The Cohere-shaped answer for a finished job (``result=None``: no documents)."""
    results: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "api_version": {"version": api_version},
        "billed_units": {"search_units": max(1, -(-len(body.documents) // 100)) if body.documents else 0},
    }
    if result is not None:
        ranking = result.ranking[: body.top_n] if body.top_n else result.ranking
        for doc in ranking:
            idx = int(doc.docid)
            item: dict[str, Any] = {"index": idx, "relevance_score": relevance_score(doc.rank, len(body.documents))}
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
