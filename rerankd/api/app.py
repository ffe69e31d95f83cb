"""The FastAPI application: ``create_app(settings)`` assembles the routers of :mod:`rerankd.api.routers`.

Endpoints: ``POST /v1/rerank`` and ``/v2/rerank`` (Cohere's shape, synchronous),
``/v1/jobs`` (asynchronous jobs), ``/v1/batches`` (JSONL files), ``GET /v1/models``,
``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.  What they do is in
:class:`~rerankd.api.service.JobService` and :class:`~rerankd.api.batch_service.BatchService`,
both on one :class:`~rerankd.api.admission.Admission` (every check) and one job store; errors
have one shape (:mod:`rerankd.api.errors`), and Redis or broker trouble answers 503 with Retry-After, never 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rerankd.api import handlers, openapi
from rerankd.api.admission import Admission
from rerankd.api.batch_service import BatchService
from rerankd.api.body import BodyGuardMiddleware
from rerankd.api.routers import ROUTERS
from rerankd.api.service import JobService
from rerankd.config import Settings, get_settings
from rerankd.jobs.brokers import open_store

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    store = open_store(settings)
    admission = Admission(settings)
    svc = JobService(settings, store, admission)
    batches = BatchService(settings, store, admission)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("rerankd").setLevel(settings.log_level.upper())
        if not svc.auth.enabled:
            log.warning(
                "no API keys configured (RERANKD_API_KEYS / RERANKD_API_KEYS_FILE): serving "
                "unauthenticated requests from loopback clients only"
            )
        else:
            log.info("API keys enforced for %d owner(s)", len(set(svc.auth.keys.values())))
        await svc.start()
        # RabbitMQ: republish the messages a crash left in the broker outbox (rerankd.jobs.relay)
        relay = asyncio.create_task(store.broker_outbox.run()) if store.broker_outbox else None
        try:
            yield
        finally:
            if relay is not None:
                relay.cancel()
            await svc.stop()

    app = FastAPI(title="rerankd", version="0.1.0", lifespan=lifespan)
    app.state.service = svc
    app.state.batches = batches
    app.add_middleware(BodyGuardMiddleware, settings=settings)
    app.add_middleware(handlers.ErrorShieldMiddleware)  # outermost: around the body guard too
    handlers.install(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    openapi.install(app)
    return app
