"""Job creation: one admitted job into the store (sync reranks and ``POST /v1/jobs``), and the
API answers of a refused creation shared with batches (quota 429, queue full 503).

A batch creates its jobs in one Lua script (:meth:`rerankd.jobs.batches.BatchStore.submit`);
the per-job part, fields and message, is :meth:`rerankd.api.admission.Admission.job` for all three.
"""

from __future__ import annotations

from rerankd.api.admission import NewJob
from rerankd.api.errors import ApiError
from rerankd.config import Settings
from rerankd.jobs import CreateResult, JobStore
from rerankd.jobs.quotas import SETTING_OF, Quota, retry_seconds

__all__ = ["JobCreator"]


class JobCreator:
    """Creates jobs in ``store`` and turns its refusals into API errors."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    def unavailable(self, message: str) -> ApiError:
        """503 with Retry-After."""
        return ApiError(503, message, {"Retry-After": str(self.settings.retry_after_s)}, code="unavailable")

    async def metric(self, name: str, labels: dict[str, str], n: int = 1) -> None:
        m = self.store.metrics()
        m.inc(name, labels, n)
        await self.store.flush_metrics(m)

    async def create(
        self,
        job: NewJob,
        quota: Quota,
        idempotency: tuple[str, str, str] | None = None,
    ) -> CreateResult:
        """Create and queue ``job`` (outcome ``created``, or ``existing`` for a replayed
        Idempotency-Key); 429 over a quota, 422 for a key reused with another body, 503 when
        the queue is full."""
        model, queue = job.fields["model"], job.fields["queue"]
        m = self.store.metrics()
        labels = {"kind": job.fields["kind"], "model": model, "strategy": job.fields["strategy"]}
        m.inc("jobs_submitted_total", labels)
        created = await self.store.create(
            job.id,
            job.fields,
            ttl_s=self.settings.job_ttl_s,
            max_depth=self.settings.max_queue_depth,
            idempotency=idempotency,
            metrics=m,
            message=job.message,
            quota=quota,
        )
        if created.outcome == "quota":
            raise await self.quota_error(quota, created)
        if created.outcome == "conflict" and idempotency is not None:
            raise ApiError(
                422,
                f"Idempotency-Key {idempotency[1]!r} was already used with a different body (job {created.job_id})",
                code="idempotency_key_reused",
                field="Idempotency-Key",
            )
        if created.outcome == "full":
            await self.metric("jobs_rejected_total", {"reason": "queue_full", "model": model})
            depth = self.settings.max_queue_depth
            raise self.unavailable(f"queue {queue} is full (RERANKD_MAX_QUEUE_DEPTH={depth}); retry later")
        return created

    async def quota_error(self, quota: Quota, created: CreateResult) -> ApiError:
        """The 429 of a creation refused by a quota (``created.outcome == "quota"``), counted in
        ``jobs_rejected_total{reason="quota"}``."""
        await self.metric("jobs_rejected_total", {"reason": "quota", "limit": created.limit})
        retry = created.retry_after_s if created.retry_after_s is not None else float(self.settings.retry_after_s)
        name = "batch_jobs_in_flight" if created.limit == "jobs_in_flight" and quota.batch else created.limit
        return ApiError(
            429,
            quota.message(created.limit, created.current, retry),
            {"Retry-After": str(retry_seconds(retry))},
            code="quota_exceeded",
            limit=quota.limit_value(created.limit),
            setting=SETTING_OF[name],
        )
