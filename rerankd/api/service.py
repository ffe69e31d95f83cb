"""``JobService``: what the routes do, without HTTP: submit, wait, cancel, batches, the checks.

Routers (:mod:`rerankd.api.routers`) parse requests and shape answers; every decision about jobs
is here.  Failures are :class:`~rerankd.api.errors.ApiError` (status, message, headers).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rerankd.api.auth import Authenticator
from rerankd.api.batch_service import BatchService
from rerankd.api.errors import ApiError, LimitError
from rerankd.api.fairness import quota_error, quota_for
from rerankd.api.limits import check_request
from rerankd.api.schemas import JobCreate, our_request
from rerankd.api.sizes import check_fields
from rerankd.api.waiter import JobWaiter
from rerankd.config import Settings
from rerankd.jobs import JobRecord, JobStore, body_hash, new_id, views
from rerankd.jobs.messages import task_message
from rerankd.jobs.quotas import INTERACTIVE
from rerankd.jobs.routing import strategy_queue
from rerankd.types import RerankRequest, StrategyConfig
from rerankd.webhooks.admission import check_callback

__all__ = ["ERROR_STATUS", "JobService", "Submitted"]

log = logging.getLogger(__name__)

_WAIT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")

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
class Target:
    """Where a request runs: the served model, its default strategy and the key prefix of its queues."""

    model: str
    strategy: StrategyConfig
    prefix: str

    def queue(self, req: RerankRequest) -> str:
        """The queue of ``req`` on this model: the one read by workers that can serve its strategy."""
        return strategy_queue(self.prefix, self.model, req.strategy)


class JobService:
    """Submit, wait for, cancel and read jobs and batches for an owner."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore.from_url(settings.broker_url, settings.key_prefix, timeout_s=settings.redis_timeout_s)
        self.waiter = JobWaiter(self.store)
        self.auth = Authenticator(settings.api_key_map())
        self.batches = BatchService(self)

    async def start(self) -> None:
        self.waiter.start()

    async def stop(self) -> None:
        await self.waiter.stop()
        await self.store.aclose()

    # ------------------------------------------------------------------ checks

    def unavailable(self, message: str) -> ApiError:
        """503 with Retry-After."""
        return ApiError(503, message, {"Retry-After": str(self.settings.retry_after_s)}, code="unavailable")

    def resolve(self, name: str | None) -> Target:
        """The model ``name`` (an alias, a served model or ``None``: the default) runs on; 404 if unknown."""
        try:
            model, strategy = self.settings.resolve_model(name)
        except KeyError as e:
            raise ApiError(404, str(e.args[0]), code="unknown_model") from None
        return Target(model, strategy, self.settings.key_prefix)

    def check_request(self, req: RerankRequest, where: str = "") -> None:
        """Size limits of a request (413/422 naming the limit); ``where`` prefixes the message."""
        try:
            check_request(self.settings, req.query.text, [c.text for c in req.candidates], field="candidates")
        except LimitError as e:
            e.message = where + e.message
            raise
        check_fields(self.settings, req, where)

    def check_texts(self, query: str, documents: list[str], field: str = "documents") -> None:
        """Size limits of a query and its documents (413/422 naming the limit)."""
        check_request(self.settings, query, documents, field=field)

    def sync_timeout(self, prefer: str | None) -> float:
        """How long a sync call waits: ``Prefer: wait=N`` capped by RERANKD_SYNC_TIMEOUT_S."""
        wait = prefer_wait(prefer)
        limit = self.settings.sync_timeout_s
        return min(wait, limit) if wait else limit

    def check_deadline(self, deadline_s: float | None) -> float:
        """The job's deadline: ``deadline_s`` or the server's, never above the server's."""
        limit = self.settings.job_deadline_s
        deadline = deadline_s or limit
        if deadline > limit:
            raise LimitError.over(422, "deadline_s", int(deadline), "seconds", int(limit), "RERANKD_JOB_DEADLINE_S")
        return deadline

    def idempotency(self, owner: str, key: str | None, body: Any) -> tuple[str, str, str] | None:
        if not key:
            return None
        if len(key) > 255:
            raise ApiError(422, "Idempotency-Key: at most 255 characters", field="Idempotency-Key")
        return owner, key, body_hash(body)

    async def owned(self, job_id: str, owner: str, with_request: bool = True) -> JobRecord:
        """The job if ``owner`` owns it, else 404."""
        record = await self.store.get(job_id, with_request=with_request)
        if record is None or record.owner != owner:
            raise ApiError(404, f"no job {job_id!r}", code="not_found")
        return record

    async def metric(self, name: str, labels: dict[str, str]) -> None:
        m = self.store.metrics()
        m.inc(name, labels)
        await self.store.flush_metrics(m)

    async def _queue_full(self, target: Target, queue: str) -> ApiError:
        await self.metric("jobs_rejected_total", {"reason": "queue_full", "model": target.model})
        depth = self.settings.max_queue_depth
        return self.unavailable(f"queue {queue} is full (RERANKD_MAX_QUEUE_DEPTH={depth}); retry later")

    # ------------------------------------------------------------------ jobs

    async def submit_job(self, owner: str, body: JobCreate, idempotency_key: str | None = None) -> Submitted:
        """``POST /v1/jobs``: check, create and queue a job (or replay the Idempotency-Key's job)."""
        target = self.resolve(body.model)
        req = our_request(body, target.strategy)
        self.check_request(req)
        deadline = self.check_deadline(body.deadline_s)
        if body.callback_url:  # a signing secret for the key, and the egress policy (DNS included)
            try:
                await check_callback(self.settings, owner, body.callback_url)
            except ValueError as e:
                raise ApiError(422, str(e), field="callback_url") from None
        idem = self.idempotency(owner, idempotency_key, body.model_dump(mode="json"))
        job_id = new_id("job")
        queue = target.queue(req)
        fields = self.store.job_fields(
            owner=owner,
            model=target.model,
            queue=queue,
            request=req,
            deadline_s=deadline,
            max_attempts=self.settings.max_attempts,
            callback_url=body.callback_url,
        )
        m = self.store.metrics()
        m.inc("jobs_submitted_total", {"kind": "job", "model": target.model, "strategy": req.strategy.name})
        quota = quota_for(self.settings, owner, len(req.candidates))
        created = await self.store.create(
            job_id,
            fields,
            ttl_s=self.settings.job_ttl_s,
            max_depth=self.settings.max_queue_depth,
            idempotency=idem,
            metrics=m,
            message=task_message(job_id, queue),
            quota=quota,
        )
        if created.outcome == "quota":
            raise await quota_error(self.store, self.settings, quota, created)
        if created.outcome == "conflict":
            raise ApiError(
                422,
                f"Idempotency-Key {idempotency_key!r} was already used with a different body (job {created.job_id})",
                code="idempotency_key_reused",
                field="Idempotency-Key",
            )
        if created.outcome == "full":
            raise await self._queue_full(target, queue)
        record = await self.store.get(created.job_id)
        if record is None:
            raise ApiError(
                404, f"job {created.job_id} of this Idempotency-Key has expired", code="idempotency_key_expired"
            )
        return Submitted(record, replayed=created.outcome == "existing")

    async def run_sync(
        self, owner: str, target: Target, req: RerankRequest, timeout: float, priority: int = INTERACTIVE
    ) -> JobRecord:
        """Create a job, wait up to ``timeout`` seconds for it and return it finished (succeeded).

        ``priority``: the lane (:mod:`rerankd.jobs.quotas`).  Over a quota: 429 + Retry-After.
        Timeout or a lost worker: 503 with Retry-After; the job is expired (still queued) or
        cancelled (running), never left to run for nobody."""
        check_fields(self.settings, req)
        quota = quota_for(self.settings, owner, len(req.candidates))
        job_id = new_id("job")
        queue = target.queue(req)
        fields = self.store.job_fields(
            owner=owner,
            model=target.model,
            queue=queue,
            request=req,
            deadline_s=self.settings.job_deadline_s,
            max_attempts=self.settings.max_attempts,
            kind="rerank",
            expires_in=timeout,
            priority=priority,
        )
        fut = self.waiter.register(job_id)
        try:
            m = self.store.metrics()
            m.inc("jobs_submitted_total", {"kind": "rerank", "model": target.model, "strategy": req.strategy.name})
            created = await self.store.create(
                job_id,
                fields,
                ttl_s=self.settings.job_ttl_s,
                max_depth=self.settings.max_queue_depth,
                metrics=m,
                message=task_message(job_id, queue, priority=priority),
                quota=quota,
            )
            if created.outcome == "quota":
                raise await quota_error(self.store, self.settings, quota, created)
            if created.outcome == "full":
                raise await self._queue_full(target, queue)
        except BaseException:
            self.waiter.unregister(job_id, fut)
            raise
        record = await self.waiter.wait(job_id, fut, timeout)
        if record is None or not record.terminal:
            record = await self._sync_timeout(job_id, target, req, timeout)
        if record.status != "succeeded":
            code = record.error_code or "engine_error"
            status = ERROR_STATUS.get(code, 502)
            headers = {"Retry-After": str(self.settings.retry_after_s)} if status == 503 else None
            raise ApiError(status, f"job {job_id} {record.status}: {views.public_error(record)}", headers, code=code)
        return record

    async def _sync_timeout(self, job_id: str, target: Target, req: RerankRequest, timeout: float) -> JobRecord:
        """Give up on a sync job: expire it if queued, else cancel it; 503 + Retry-After (or the
        record, if the job finished in the meantime)."""
        if await self.store.expire_if_queued(job_id):
            labels = {"status": "expired", "model": target.model, "strategy": req.strategy.name}
            await self.metric("jobs_finished_total", labels)
            raise self.unavailable(
                f"no worker took the job within {timeout:g}s (queue {target.queue(req)}, job {job_id}); retry later"
            )
        outcome, _ = await self.store.cancel(job_id, None)
        if outcome == "final":
            record = await self.store.get(job_id, with_request=False)
            if record is not None:
                return record
        raise self.unavailable(f"job {job_id} did not finish within {timeout:g}s and was cancelled; retry later")

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


def prefer_wait(header: str | None) -> float | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240) in seconds; 422 if malformed."""
    if not header:
        return None
    for pref in header.split(","):
        name, _, value = pref.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not _WAIT.fullmatch(value) or float(value) <= 0:
            raise ApiError(
                422,
                f"Prefer: wait={value!r} is not a positive number of seconds (e.g. 'Prefer: wait=10')",
                field="Prefer",
            )
        return float(value)
    return None
