"""``/v1/jobs``: asynchronous rerank jobs (create with ``Idempotency-Key``, list, read, cancel)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from rerankd.api import listing
from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.schemas import JobCreate, JobListOut, JobOut
from rerankd.jobs import views

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "", status_code=202, response_model=None, responses={202: {"model": JobOut}, **errors(401, 404, 413, 422, 429, 503)}
)
async def create_job(
    body: JobCreate,
    svc: Service,
    owner: Owner,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Queue a rerank job; 202 with ``Location``.  Same Idempotency-Key and body: same job."""
    submitted = await svc.submit_job(owner, body, idempotency_key)
    headers = {"Location": f"/v1/jobs/{submitted.record.id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(views.job_view(submitted.record), status_code=202, headers=headers)


@router.get(
    "",
    response_model=JobListOut,
    response_model_exclude_unset=True,
    responses=errors(401, 422, 503),
    description="The caller's jobs (of `POST /v1/jobs` and the synchronous rerank routes; a batch's jobs "
    "are in its results)." + listing.PAGE_DOC,
)
async def list_jobs(
    svc: Service,
    owner: Owner,
    status: Annotated[str | None, Query(description=f"Comma-separated, of {', '.join(listing.JOB_STATUSES)}.")] = None,
    model: listing.Model = None,
    strategy: listing.Strategy = None,
    created_after: listing.After = None,
    created_before: listing.Before = None,
    cursor: listing.Cursor = None,
    limit: listing.Limit = 20,
) -> dict[str, Any]:
    filters = listing.parse_filters(status, model, strategy, created_after, created_before, listing.JOB_STATUSES)
    return await listing.list_jobs(svc.store, owner, filters, cursor, limit)


@router.get("/{job_id}", response_model=JobOut, response_model_exclude_unset=True, responses=errors(401, 404, 503))
async def get_job(job_id: str, svc: Service, owner: Owner, include: str | None = None) -> dict[str, Any]:
    """A job's status, result or error (``?include=request,history`` for more)."""
    return await svc.job(job_id, owner, set((include or "").split(",")))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    response_model_exclude_unset=True,
    responses=errors(401, 404, 409, 413, 503),
)
async def cancel_job(job_id: str, svc: Service, owner: Owner) -> dict[str, Any]:
    """Cancel a queued job now, or ask the worker running it to stop."""
    return await svc.cancel(job_id, owner)
