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
``tokens``, ``warnings``).  ``relevance_score`` (:func:`rerankd.calibration.relevance_score`) is
P(relevant) from the calibration the worker loaded for the model, strategy and settings
(``docs/calibration.md``); without one it is the rank-derived map ``1 - (rank - 1) / n`` for the
document's final rank among the ``n`` documents sent (1.0 for the best; independent of
``top_n``): a position, not a probability.  rerankd extensions, which the official SDKs accept
and ignore: ``meta.relevance`` says which (``{"kind": "calibrated", "calibration": id}`` or
``{"kind": "rank"}``), and a request with ``raw_scores: true`` (as TEI's) gets each result's
``raw_score``, the strategy's own score.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rerankd.api.admission import Ask
from rerankd.api.errors import ApiError, validation_message
from rerankd.calibration import relevance_kind, relevance_score
from rerankd.jobs.quotas import cohere_lane
from rerankd.types import Candidate, Query, RerankRequest, RerankResult, StrategyConfig


class CohereRerankRequest(BaseModel):
    """The body of ``POST /v1/rerank`` and ``POST /v2/rerank``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str | dict[str, Any]] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(
        default=None, ge=1, description="Cut each document to this many tokens of the model's tokenizer."
    )
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    relevant_spans: Any = None
    raw_scores: bool = Field(
        default=False, description="rerankd extension: add each result's raw_score (the strategy's own score)."
    )
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


def ask(body: CohereRerankRequest) -> Ask:
    """``body`` to admit (:mod:`rerankd.api.admission`): its texts, its object documents and its lane."""
    texts = texts_of(body)

    def build(strategy: StrategyConfig) -> RerankRequest:
        try:
            return to_request(body, texts, strategy)
        except ValidationError as e:
            raise ApiError(422, validation_message(e.errors())) from None

    return Ask(
        model=body.model,
        query=body.query,
        texts=texts,
        build=build,
        documents=body.documents,
        priority=cohere_lane(body.priority),
    )


def relevance_meta(result: RerankResult | None) -> dict[str, str]:
    """Which relevance the answer carries: ``{"kind": "calibrated", "calibration": id}`` or ``{"kind": "rank"}``."""
    if result is not None and result.calibration is not None:
        return {"kind": relevance_kind(result), "calibration": result.calibration}
    return {"kind": relevance_kind(result)}


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
            item: dict[str, Any] = {"index": idx, "relevance_score": relevance_score(doc, len(body.documents))}
            if body.raw_scores:
                item["raw_score"] = doc.score
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
    meta["relevance"] = relevance_meta(result)
    return {"id": job_id, "results": results, "meta": meta}
