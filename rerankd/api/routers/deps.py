"""Dependencies the routers share: the :class:`JobService` and the caller's owner name."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rerankd.api.service import JobService


def get_service(request: Request) -> JobService:
    svc: JobService = request.app.state.service
    return svc


def get_owner(request: Request, svc: Annotated[JobService, Depends(get_service)]) -> str:
    """The owner of the API key (401 without a valid one)."""
    return svc.auth.owner(request)


Service = Annotated[JobService, Depends(get_service)]
Owner = Annotated[str, Depends(get_owner)]
