"""Dependencies the routers share: the :class:`JobService`, the :class:`BatchService` and the caller's owner name.

All ``async def``, though none awaits: FastAPI runs a plain ``def`` dependency in its thread pool,
a hop there and back for each of them on every request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rerankd.api.batch_service import BatchService
from rerankd.api.service import JobService


async def get_service(request: Request) -> JobService:
    svc: JobService = request.app.state.service
    return svc


async def get_batches(request: Request) -> BatchService:
    batches: BatchService = request.app.state.batches
    return batches


async def get_owner(request: Request, svc: Annotated[JobService, Depends(get_service)]) -> str:
    """The owner of the API key (401 without a valid one)."""
    return svc.auth.owner(request)


Service = Annotated[JobService, Depends(get_service)]
Batches = Annotated[BatchService, Depends(get_batches)]
Owner = Annotated[str, Depends(get_owner)]
