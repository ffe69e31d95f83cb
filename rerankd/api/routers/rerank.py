"""``POST /v1/rerank`` and ``POST /v2/rerank``: Cohere's rerank, synchronous, over :class:`JobService`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from rerankd.api import cohere
from rerankd.api.errors import ApiError, validation_message
from rerankd.api.openapi import CohereRerankOut, errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.service import JobService
from rerankd.api.sizes import check_documents
from rerankd.jobs import new_id
from rerankd.jobs.quotas import cohere_lane

router = APIRouter(tags=["rerank"])
SYNC_ERRORS = errors(401, 404, 409, 413, 422, 429, 502, 503, 504)

PreferHeader = Annotated[
    str | None,
    Header(alias="Prefer", description="`wait=N`: answer within N seconds (at most RERANKD_SYNC_TIMEOUT_S)."),
]


async def rerank(
    svc: JobService, owner: str, body: cohere.CohereRerankRequest, prefer: str | None, version: str
) -> dict[str, Any]:
    """Run a Cohere rerank request as a job and answer in Cohere's shape."""
    target = svc.resolve(body.model)
    texts = cohere.texts_of(body)
    svc.check_texts(body.query, texts)
    check_documents(svc.settings, body.documents)
    if not body.documents:
        return cohere.response(new_id("job"), body, None, version)
    try:
        req = cohere.to_request(body, texts, target.strategy)
    except ValidationError as e:
        raise ApiError(422, validation_message(e.errors())) from None
    record = await svc.run_sync(owner, target, req, svc.sync_timeout(prefer), priority=cohere_lane(body.priority))
    return cohere.response(record.id, body, record.result, version)


@router.post("/v1/rerank", response_model=None, responses={200: {"model": CohereRerankOut}, **SYNC_ERRORS})
async def rerank_v1(
    body: cohere.CohereRerankRequest, svc: Service, owner: Owner, prefer: PreferHeader = None
) -> JSONResponse:
    """Cohere v1 rerank (synchronous)."""
    return JSONResponse(await rerank(svc, owner, body, prefer, "1"))  # plain JSON: no jsonable_encoder pass


@router.post("/v2/rerank", response_model=None, responses={200: {"model": CohereRerankOut}, **SYNC_ERRORS})
async def rerank_v2(
    body: cohere.CohereRerankRequest, svc: Service, owner: Owner, prefer: PreferHeader = None
) -> JSONResponse:
    """Cohere v2 rerank (synchronous)."""
    return JSONResponse(await rerank(svc, owner, body, prefer, "2"))  # plain JSON: no jsonable_encoder pass
