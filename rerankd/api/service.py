"""``JobService``: what the job routes do, without HTTP: sync reranks, submit, wait, cancel.

Routers (:mod:`rerankd.api.routers`) turn a body into an :class:`~rerankd.api.admission.Ask`,
make one call here and shape the answer.  Every check is :class:`~rerankd.api.admission.Admission`'s
and creation is :class:`~rerankd.api.creation.JobCreator`'s (batches:
:class:`~rerankd.api.batch_service.BatchService`, on the same two).  Failures are
:class:`~rerankd.api.errors.ApiError` (status, message, headers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rerankd.api.admission import Admission, Ask, Target
from rerankd.api.auth import Authenticator
from rerankd.api.creation import JobCreator
from rerankd.api.errors import ApiError
from rerankd.api.schemas import JobCreate
from rerankd.api.waiter import JobWaiter
from rerankd.config import Settings
from rerankd.jobs import JobRecord, JobStore, body_hash, views
from rerankd.types import RerankRequest, RerankResult

__all__ = ["ERROR_STATUS", "JobService", "Ranked", "Submitted"]

log = logging.getLogger(__name__)

# HTTP status of a sync call whose job ended with this error code.
ERROR_STATUS = {
    "invalid_request": 422,
    "deadline_exceeded": 504,
    "worker_lost": 503,
    "engine_error": 502,
    "cancelled": 409,
    "expired": 503,
}


@dataclass(frozen=True)
class Submitted:
    """An accepted job: its record, and whether an Idempotency-Key replayed an earlier one."""

    record: JobRecord
    replayed: bool = False


@dataclass(frozen=True)
class Ranked:
    """A sync rerank's answer: the job id and its result (``None`` only from a record without one)."""

    job_id: str
    result: RerankResult | None


class JobService:
    """Submit, wait for, cancel and read the jobs of an owner."""

    def __init__(self, settings: Settings, store: JobStore, admission: Admission) -> None:
        self.settings = settings
        self.store = store
        self.admission = admission
        self.creator = JobCreator(settings, store)
        self.waiter = JobWaiter(store)
        self.auth = Authenticator(settings.api_key_map(), settings.metrics_key)

    async def start(self) -> None:
        self.waiter.start()

    async def stop(self) -> None:
        await self.waiter.stop()
        await self.store.aclose()

    async def owned(self, job_id: str, owner: str, with_request: bool = True) -> JobRecord:
        """The job if ``owner`` owns it, else 404."""
        record = await self.store.get(job_id, with_request=with_request)
        if record is None or record.owner != owner:
            raise ApiError(404, f"no job {job_id!r}", code="not_found")
        return record

    # ------------------------------------------------------------------ create

    async def submit_job(self, owner: str, body: JobCreate, idempotency_key: str | None = None) -> Submitted:
        """``POST /v1/jobs``: check, create and queue a job (or replay the Idempotency-Key's job)."""
        admitted = self.admission.check(Ask.of(body))
        await self.admission.check_callback(owner, admitted.callback_url)
        key = self.admission.idempotency_key(idempotency_key)
        idem = (owner, key, body_hash(body.model_dump(mode="json"))) if key else None
        job = self.admission.job(owner, admitted)
        quota = self.admission.quota(owner, len(admitted.request.candidates))
        created = await self.creator.create(job, quota, idem)
        record = await self.store.get(created.job_id)
        if record is None:
            raise ApiError(
                404, f"job {created.job_id} of this Idempotency-Key has expired", code="idempotency_key_expired"
            )
        return Submitted(record, replayed=created.outcome == "existing")

    async def rerank_sync(self, owner: str, ask: Ask, prefer: str | None = None) -> Ranked:
        """A sync rerank (Cohere's, TEI's): check ``ask``, create its job, wait for it
        (``Prefer: wait=N``, at most RERANKD_SYNC_TIMEOUT_S) and return its result.

        ``ask.priority``: the lane (:mod:`rerankd.jobs.quotas`).  Over a quota: 429 + Retry-After.
        Timeout or a lost worker: 503 with Retry-After; the job is expired (still queued) or
        cancelled (running), never left to run for nobody."""
        admitted = self.admission.check(ask)
        timeout = self.admission.sync_timeout(prefer)
        quota = self.admission.quota(owner, len(admitted.request.candidates))
        job = self.admission.job(owner, admitted, "rerank", expires_in=timeout)
        job.fields["reply_to"] = self.waiter.inbox  # the finished record comes to this process
        fut = self.waiter.register(job.id)
        try:
            await self.creator.create(job, quota)
        except BaseException:
            self.waiter.unregister(job.id, fut)
            raise
        record = await self.waiter.wait(job.id, fut, timeout)
        if record is None or not record.terminal:
            record = await self._sync_timeout(job.id, admitted.target, admitted.request, timeout)
        if record.status != "succeeded":
            code = record.error_code or "engine_error"
            status = ERROR_STATUS.get(code, 502)
            headers = {"Retry-After": str(self.settings.retry_after_s)} if status == 503 else None
            raise ApiError(status, f"job {job.id} {record.status}: {views.public_error(record)}", headers, code=code)
        return Ranked(record.id, record.result)

    async def _sync_timeout(self, job_id: str, target: Target, req: RerankRequest, timeout: float) -> JobRecord:
        """Give up on a sync job: expire it if queued, else cancel it; 503 + Retry-After (or the
        record, if the job finished in the meantime)."""
        if await self.store.expire_if_queued(job_id):
            labels = {"status": "expired", "model": target.model, "strategy": req.strategy.name}
            await self.creator.metric("jobs_finished_total", labels)
            raise self.creator.unavailable(
                f"no worker took the job within {timeout:g}s (queue {target.queue(req)}, job {job_id}); retry later"
            )
        outcome, _ = await self.store.cancel(job_id, None)
        if outcome == "final":
            record = await self.store.get(job_id, with_request=False)
            if record is not None:
                return record
        raise self.creator.unavailable(
            f"job {job_id} did not finish within {timeout:g}s and was cancelled; retry later"
        )

    async def job(self, job_id: str, owner: str, include: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: the job as tenants see it (``include``: ``request``, ``history``)."""
        record = await self.owned(job_id, owner)
        out = views.job_view(record, include_request="request" in include)
        if "history" in include:
            out["history"] = views.history_view(await self.store.history(job_id))
        return out

    async def cancel(self, job_id: str, owner: str) -> dict[str, Any]:
        """Cancel a queued job now, or ask the worker running it to stop; 409 if already final."""
        outcome, status = await self.store.cancel(job_id, owner)
        if outcome == "missing":
            raise ApiError(404, f"no job {job_id!r}", code="not_found")
        if outcome == "final":
            raise ApiError(409, f"job {job_id} already {status}", code="already_final")
        return views.job_view(await self.owned(job_id, owner))
