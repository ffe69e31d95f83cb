"""``POST /v1/rerank`` and ``POST /v2/rerank``: Cohere's rerank, synchronous, over :class:`JobService`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from rerankd.api import cohere
from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.schemas import CohereRerankOut
from rerankd.api.service import JobService

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
    ranked = await svc.rerank_sync(owner, cohere.ask(body), prefer)
    return cohere.response(ranked.job_id, body, ranked.result, version)


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
