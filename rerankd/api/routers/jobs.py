"""``/v1/jobs``: asynchronous rerank jobs (create with ``Idempotency-Key``, read, cancel)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from rerankd.api.openapi import JobOut, errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.schemas import JobCreate
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


@router.get("/{job_id}", response_model=None, responses={200: {"model": JobOut}, **errors(401, 404, 503)})
async def get_job(job_id: str, svc: Service, owner: Owner, include: str | None = None) -> dict[str, Any]:
    """A job's status, result or error (``?include=request,history`` for more)."""
    return await svc.job(job_id, owner, set((include or "").split(",")))


@router.post(
    "/{job_id}/cancel", response_model=None, responses={200: {"model": JobOut}, **errors(401, 404, 409, 413, 503)}
)
async def cancel_job(job_id: str, svc: Service, owner: Owner) -> dict[str, Any]:
    """Cancel a queued job now, or ask the worker running it to stop."""
    return await svc.cancel(job_id, owner)
