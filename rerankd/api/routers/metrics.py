"""``GET /metrics``: Prometheus text (global totals read from Redis)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from rerankd.api.metrics import render as render_metrics
from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Service
from rerankd.jobs.routing import model_queues

router = APIRouter(tags=["ops"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text."},
        **errors(503),
    },
)
async def metrics(svc: Service) -> Response:
    """Prometheus metrics (global: read from Redis)."""
    s = svc.settings
    text = await render_metrics(svc.store, [q for m in s.served_models() for q in model_queues(s.key_prefix, m)])
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
