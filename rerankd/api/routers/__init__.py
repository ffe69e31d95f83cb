"""One router per resource; :func:`rerankd.api.app.create_app` includes them all."""

from rerankd.api.routers import batches, health, jobs, metrics, models, queues, rerank, tei, ui

ROUTERS = [
    rerank.router,
    tei.router,
    jobs.router,
    batches.router,
    models.router,
    health.router,
    metrics.router,
    queues.router,
    ui.router,
]

__all__ = ["ROUTERS"]
