"""``POST /rerank``: Hugging Face Text Embeddings Inference's rerank shape, synchronous.

Request: ``query``, ``texts``, ``raw_scores`` (default false), ``return_text`` (default false),
``truncate`` (default false), ``truncation_direction`` (``Right``/``Left``) and, as an extension,
``model`` (a name of this server; default: the default alias).  Answer: ``[{index, score,
text?}]`` best first, every text ranked.

``score`` is Cohere's ``relevance_score`` (:func:`rerankd.calibration.relevance_score`): P(relevant)
when the worker has a calibration for the model, strategy and settings, else the rank-derived map
``1 - (rank - 1) / n`` (1.0 for the best); the ``X-Rerankd-Relevance`` header says which
(``calibrated`` or ``rank``; the body keeps TEI's shape).  With ``raw_scores`` it is the
strategy's own score of the document (``RankedDoc.score``), whose scale depends on the strategy.
``truncate``: a query or text over RERANKD_MAX_QUERY_CHARS / RERANKD_MAX_DOCUMENT_CHARS is cut
to it (from the end, or from the start with ``truncation_direction: Left``) instead of refused
with 422, as TEI cuts inputs to the model's length.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from rerankd.api.admission import Ask
from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.routers.rerank import PreferHeader
from rerankd.calibration import relevance_kind, relevance_score
from rerankd.config import Settings
from rerankd.types import Candidate, Query, RerankRequest

router = APIRouter(tags=["tei"])
RELEVANCE_HEADER = "X-Rerankd-Relevance"


class TeiRerankRequest(BaseModel):
    """The body of TEI's ``POST /rerank``."""

    model_config = ConfigDict(extra="forbid")

    query: str
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    model: str | None = Field(default=None, description="rerankd extension: a model name (default alias if unset).")


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


def _cut(text: str, limit: int, left: bool) -> str:
    if len(text) <= limit:
        return text
    return text[-limit:] if left else text[:limit]


def tei_ask(body: TeiRerankRequest, settings: Settings) -> Ask:
    """``body`` to admit (:mod:`rerankd.api.admission`), cut to the limits first when ``truncate``."""
    query, texts = body.query, body.texts
    if body.truncate:
        left = body.truncation_direction.lower() == "left"
        query = _cut(query, settings.max_query_chars, left)
        texts = [_cut(t, settings.max_document_chars, left) for t in texts]
    return Ask(
        model=body.model,
        query=query,
        texts=texts,
        build=lambda strategy: RerankRequest(
            query=Query(text=query),
            candidates=[Candidate(docid=str(i), text=t) for i, t in enumerate(texts)],
            strategy=strategy,
        ),
        field="texts",
    )


@router.post(
    "/rerank",
    response_model=None,
    responses={200: {"model": list[TeiRank]}, **errors(401, 404, 409, 413, 422, 429, 502, 503, 504)},
)
async def tei_rerank(
    body: TeiRerankRequest, svc: Service, owner: Owner, response: Response, prefer: PreferHeader = None
) -> list[dict[str, Any]]:
    """TEI-compatible rerank (synchronous): every text ranked, best first."""
    ranked = await svc.rerank_sync(owner, tei_ask(body, svc.settings), prefer)
    if ranked.result is None:  # a record without a result: nothing to list
        return []
    response.headers[RELEVANCE_HEADER] = relevance_kind(ranked.result)
    out = []
    for doc in ranked.result.ranking:
        idx = int(doc.docid)
        item: dict[str, Any] = {
            "index": idx,
            "score": doc.score if body.raw_scores else relevance_score(doc, len(body.texts)),
        }
        if body.return_text:
            item["text"] = body.texts[idx]
        out.append(item)
    return out
