"""``GET /v1/jobs`` and ``GET /v1/batches``: a tenant's jobs and batches, newest first, with
filters and cursor pagination (see :mod:`rerankd.api.listing`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from rerankd.api import listing
from rerankd.api.openapi import BatchOut, ErrorItem, errors
from rerankd.api.routers.deps import Owner, Service

router = APIRouter()


class JobSummaryOut(BaseModel):
    """A job in a listing: as ``GET /v1/jobs/{id}`` without ``result``."""

    id: str
    object: Literal["job"]
    kind: str = Field(description="`job` (POST /v1/jobs) or `rerank` (synchronous rerank routes).")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    model: str
    strategy: str
    attempts: int
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    documents: int | None = Field(description="Candidates in the request.")
    warnings: int = Field(description="Warnings of the result (repaired outputs, truncations).")
    error: ErrorItem | None


class JobListOut(BaseModel):
    object: Literal["list"]
    data: list[JobSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    has_more: bool


class BatchSummaryOut(BatchOut):
    models: list[str]
    strategies: list[str]


class BatchListOut(BaseModel):
    object: Literal["list"]
    data: list[BatchSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    has_more: bool


Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
Limit = Annotated[int, Query(description=f"Items per page, 1 to {listing.MAX_LIMIT}.")]
Model = Annotated[str | None, Query(description="Only this served model (the name jobs show, not an alias).")]
Strategy = Annotated[str | None, Query(description="Only this strategy (e.g. `sliding_window`, `icr`).")]
After = Annotated[float | None, Query(description="Only items created after this Unix time (seconds).")]
Before = Annotated[float | None, Query(description="Only items created before this Unix time (seconds).")]
PAGE_DOC = (
    " Newest first. A page may hold fewer than `limit` items (at most "
    f"{listing.MAX_SCAN} entries are examined per request) and still have a `next_cursor`."
)


@router.get(
    "/v1/jobs",
    tags=["jobs"],
    response_model=None,
    responses={200: {"model": JobListOut}, **errors(401, 422, 503)},
    description="The caller's jobs (of `POST /v1/jobs` and the synchronous rerank routes; a batch's jobs "
    "are in its results)." + PAGE_DOC,
)
async def list_jobs(
    svc: Service,
    owner: Owner,
    status: Annotated[str | None, Query(description=f"Comma-separated, of {', '.join(listing.JOB_STATUSES)}.")] = None,
    model: Model = None,
    strategy: Strategy = None,
    created_after: After = None,
    created_before: Before = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    filters = listing.parse_filters(status, model, strategy, created_after, created_before, listing.JOB_STATUSES)
    return await listing.list_jobs(svc.store, owner, filters, cursor, limit)


@router.get(
    "/v1/batches",
    tags=["batches"],
    response_model=None,
    responses={200: {"model": BatchListOut}, **errors(401, 422, 503)},
    description="The caller's batches with their progress (`model`/`strategy`: batches with a line of it)." + PAGE_DOC,
)
async def list_batches(
    svc: Service,
    owner: Owner,
    status: Annotated[str | None, Query(description="`in_progress` or `completed`.")] = None,
    model: Model = None,
    strategy: Strategy = None,
    created_after: After = None,
    created_before: Before = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    filters = listing.parse_filters(status, model, strategy, created_after, created_before, listing.BATCH_STATUSES)
    return await listing.list_batches(svc.store, owner, filters, cursor, limit)
