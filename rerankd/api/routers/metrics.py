"""``GET /metrics``: Prometheus text (global totals read from Redis).

The metrics key (``RERANKD_METRICS_KEY``) sees every tenant's series; an API key sees the
per-key series of its own key only; with no keys configured, loopback clients see all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
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
        **errors(401, 503),
    },
)
async def metrics(request: Request, svc: Service) -> Response:
    """Prometheus metrics (global: read from Redis).  ``Authorization: Bearer`` the metrics key
    (RERANKD_METRICS_KEY) for every tenant's series, or an API key for its own."""
    owner = svc.auth.metrics_owner(request)
    s = svc.settings
    queues = [q for m in s.served_models() for q in model_queues(s.key_prefix, m)]
    text = await render_metrics(svc.store, queues, owner=owner)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
