"""``GET /healthz`` (is the service up, and with a key: which workers) and ``GET /readyz`` (probes).

``/readyz`` is one Redis PING: cheap enough for a probe every few seconds.  ``/healthz`` also
looks for live workers; without a key (or, with no keys configured, from a non-loopback
client) it says only ``ok`` or ``unavailable``.  Tenants (any API key) see workers as the
opaque ``wk_...`` ids of job records; only the local operator of a keyless, loopback-only
service sees their ``hostname:pid``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rerankd.api.auth import is_loopback
from rerankd.api.errors import error_body
from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Service
from rerankd.api.schemas import HealthOut
from rerankd.api.service import JobService
from rerankd.jobs import StoreUnavailable
from rerankd.jobs.redact import worker_ref
from rerankd.jobs.routing import STRATEGY_NEEDS, model_queues
from rerankd.jobs.workers import listed

router = APIRouter(tags=["ops"])


def _unserved(models: list[str], workers: list[dict[str, str]]) -> dict[str, list[str]]:
    """Per model with live workers, the strategies none of them serves (their jobs wait in their queue)."""
    out: dict[str, list[str]] = {}
    for m in models:
        mine = [w for w in workers if w.get("model") == m]
        if not mine:
            continue  # listed in models_without_workers
        served = {x for w in mine for x in listed(w, "strategies")}
        missing = [x for x in STRATEGY_NEEDS if x not in served]
        if missing:
            out[m] = missing
    return out


def _detailed(request: Request, svc: JobService) -> bool:
    """Whether the caller may see workers and queues: it sent a valid key (401 for a bad one)."""
    if svc.auth.enabled:
        if "authorization" not in request.headers:
            return False
        svc.auth.owner(request)
        return True
    return is_loopback(request.client.host if request.client else None)


def _unavailable(svc: JobService, message: str, **extra: Any) -> JSONResponse:
    body = {"status": "unavailable", **error_body(message, "unavailable"), **extra}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(svc.settings.retry_after_s)})


@router.get(
    "/readyz",
    response_model=HealthOut,
    response_model_exclude_unset=True,
    responses={503: {"model": HealthOut, "description": "Redis is unreachable."}},
)
async def readyz(svc: Service) -> dict[str, Any] | JSONResponse:
    """200 when this API process can reach Redis (one PING), else 503."""
    try:
        await svc.store.ping()
    except StoreUnavailable:
        return _unavailable(svc, "job store unavailable: cannot reach Redis")
    return {"status": "ok"}


@router.get(
    "/healthz",
    response_model=HealthOut,
    response_model_exclude_unset=True,
    responses={503: {"model": HealthOut, "description": "Redis is unreachable or no worker is alive."}, **errors(401)},
)
async def healthz(request: Request, svc: Service) -> dict[str, Any] | JSONResponse:
    """200 when Redis answers and at least one worker is alive; 503 otherwise."""
    detailed = _detailed(request, svc)
    s = svc.settings
    try:
        await svc.store.ping()
        workers = await svc.store.workers.live()
        queues = [q for m in s.served_models() for q in model_queues(s.key_prefix, m)] if detailed else []
        depths = {q: await svc.store.queue_depth(q) for q in queues}
    except StoreUnavailable as e:
        extra = {"redis": f"unreachable: {type(e).__name__}", "workers": []} if detailed else {}
        return _unavailable(svc, "job store unavailable: cannot reach Redis", **extra)
    if not workers:
        return _unavailable(svc, "no live worker", **({"redis": "ok", "workers": []} if detailed else {}))
    if not detailed:
        return {"status": "ok"}
    hosted = {w.get("model") for w in workers}
    opaque = svc.auth.enabled  # a tenant's key: no host names or pids

    def wid(w: dict[str, str]) -> str:
        return (worker_ref(w["id"]) or "") if opaque else w["id"]

    return {
        "status": "ok",
        "redis": "ok",
        "workers": [
            {
                "id": wid(w),
                "model": w.get("model"),
                "queues": listed(w, "queues"),
                "strategies": listed(w, "strategies"),
                "running": int(w.get("running", 0)),
            }
            for w in workers
        ],
        "queues": depths,
        "models_without_workers": [m for m in s.served_models() if m not in hosted],
        "unserved_strategies": _unserved(s.served_models(), workers),
    }
