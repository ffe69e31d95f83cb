"""API answers of the per-key quotas (:mod:`rerankd.jobs.quotas`): 429 with an accurate
``Retry-After`` naming the limit and its setting, or 413 for a request that can never pass."""

from __future__ import annotations

from rerankd.api.errors import ApiError
from rerankd.config import Settings
from rerankd.jobs import CreateResult, JobStore
from rerankd.jobs.quotas import SETTING_OF, Quota, retry_seconds


def quota_for(settings: Settings, owner: str, documents: int, jobs: int = 1, batch: bool = False) -> Quota:
    """The quota ask of a request; raises 413 when the request alone is over a limit."""
    quota = Quota.of(settings, owner, documents, jobs=jobs, batch=batch)
    over = quota.precheck()
    if over is not None:
        limit, message = over
        raise ApiError(
            413,
            message,
            code="too_large",
            field="batch" if batch else "documents",
            limit=quota.limit_value(limit),
            setting=SETTING_OF[limit],
        )
    return quota


async def quota_error(store: JobStore, settings: Settings, quota: Quota, created: CreateResult) -> ApiError:
    """The 429 of a creation refused by a quota (``created.outcome == "quota"``), counted in
    ``jobs_rejected_total{reason="quota"}``."""
    m = store.metrics()
    m.inc("jobs_rejected_total", {"reason": "quota", "limit": created.limit})
    await store.flush_metrics(m)
    retry = created.retry_after_s if created.retry_after_s is not None else float(settings.retry_after_s)
    name = "batch_jobs_in_flight" if created.limit == "jobs_in_flight" and quota.batch else created.limit
    return ApiError(
        429,
        quota.message(created.limit, created.current, retry),
        {"Retry-After": str(retry_seconds(retry))},
        code="quota_exceeded",
        limit=quota.limit_value(created.limit),
        setting=SETTING_OF[name],
    )
