"""The engine host: one engine per worker process, on an asyncio event loop thread of its own.

Celery's pool threads call :meth:`EngineHost.run_job`, which submits the job's coroutine to
the loop with ``asyncio.run_coroutine_threadsafe`` and blocks until it is done; so the N
jobs a worker runs at once are N coroutines on one loop against one engine, and the engine
batches their calls.  The loop also runs a lease/heartbeat task (renews the leases of
running jobs, stops jobs whose cancel flag is set or whose lease was lost, writes the
worker's heartbeat for ``/healthz``), a listener of the cancel channel (both in
:mod:`rerankd.worker.watch`) and the reaper (:mod:`rerankd.jobs.reaper`: requeues the jobs of
lost workers once their lease expires).  A stopping worker drains (:mod:`rerankd.worker.drain`):
its running jobs finish within ``RERANKD_DRAIN_S`` or go back to their queue, attempt not counted.
Every Redis call of the host survives a Redis outage: background rounds log and retry, and a
finished job's outcome is written once Redis is back (fenced by its attempt).

The engine comes from :func:`rerankd.worker.engine_loader.build_engine`; batch messages take a batch
slot first (:mod:`rerankd.worker.slots`); retries and metrics of an attempt are in
:mod:`rerankd.worker.outcomes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rerankd.calibration.store import CalibrationSet, load_calibrations
from rerankd.config import Settings
from rerankd.engines.base import CapabilityError, Engine
from rerankd.engines.loop_thread import LoopThread
from rerankd.jobs import ClaimResult, JobStore
from rerankd.jobs.amqp import lane_of
from rerankd.jobs.brokers import open_store
from rerankd.jobs.delivery import give_back, upper_lanes_waiting
from rerankd.jobs.quotas import BATCH
from rerankd.jobs.reaper import LeaseReaper
from rerankd.jobs.redact import redact
from rerankd.jobs.routing import strategies_of, worker_capabilities, worker_queues
from rerankd.strategies import rerank
from rerankd.types import RerankInputError, RerankResult
from rerankd.worker.drain import Drain, WorkerStopping
from rerankd.worker.engine_loader import build_engine
from rerankd.worker.outcomes import CLAIM_RETRY_S, record_metrics, retrying
from rerankd.worker.slots import BatchSlots
from rerankd.worker.watch import JobWatch, Running

__all__ = ["EngineHost", "WorkerStopping", "build_engine", "drain_host", "get_host", "start_host", "stop_host"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class EngineHost:
    """Owns the engine, its event loop thread and the worker's Redis connections."""

    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._thread = LoopThread("rerankd-engine-loop", start=False)
        self.loop = self._thread.loop
        self.engine: Engine | None = None
        self._store: JobStore | None = None
        self.watch = JobWatch(self.worker_id)
        """The running jobs; renews their leases, hears their cancel requests."""
        self._background: set[asyncio.Task[Any]] = set()
        self._started_at = time.time()
        self.jobs_done = 0
        self.queues: list[str] = []
        """The broker queues this worker reads (set once the engine is loaded)."""
        self.strategies: list[str] = []
        self.calibrations = CalibrationSet(settings.model)
        """Score -> P(relevant) maps of this model, applied to the jobs whose strategy settings match."""
        self.slots = BatchSlots(settings.worker_concurrency, settings.reserved_slots)
        """Batch jobs running here, and the slots they never take (``RERANKD_INTERACTIVE_SLOTS``)."""
        self.drain = Drain(self.watch, self.worker_id, settings.drain_limit_s)
        """Set going when the worker starts stopping (:meth:`begin_drain`, :mod:`rerankd.worker.drain`)."""

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Load the calibrations, start the loop thread and load the engine on it (blocks until
        loaded; raises on failure: a missing or corrupt calibration file before the engine)."""
        self.calibrations = load_calibrations(self.settings.model, self.settings.calibrations)
        for line in self.calibrations.describe():
            log.info("worker %s: calibration %s", self.worker_id, line)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), self.loop).result()

    async def _astart(self) -> None:
        s = self.settings
        t0 = time.perf_counter()
        # Built on the loop thread: engines that bind to the running loop (vLLM's AsyncLLM) work.
        self.engine = build_engine(s)
        try:
            served = worker_capabilities(s.worker_role, self.engine.name, self.engine.capabilities)
        except ValueError:
            await self.engine.aclose()
            raise
        self.queues = worker_queues(s.key_prefix, s.model, served)
        self.strategies = strategies_of(served)
        log.info(
            "worker %s: engine %s model %s loaded in %.1fs; role %s: strategies %s on queues %s",
            self.worker_id,
            s.engine,
            s.model,
            time.perf_counter() - t0,
            s.worker_role,
            ", ".join(self.strategies),
            ", ".join(self.queues),
        )
        self._store = open_store(s)
        info = self._worker_info()
        self._spawn(self.watch.lease_loop(self.store, s.lease_s, info, lambda: self.jobs_done), "lease-loop")
        self._spawn(self.watch.cancel_listener(self.store), "cancel-listener")
        self._spawn(self._reaper().run(s.reaper_interval_s), "reaper")
        if self.store.broker_outbox is not None:  # RabbitMQ: republish messages a crash left behind
            self._spawn(self.store.broker_outbox.run(), "broker-relay")
        # Webhooks: every worker process runs a dispatcher of the durable outbox (rerankd.webhooks).
        from rerankd.webhooks.dispatcher import Dispatcher

        self._spawn(Dispatcher(self.store, s, self.worker_id).run(), "webhook-dispatcher")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop background tasks, close the engine and the loop (jobs should be done)."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), self.loop).result(timeout)
        except Exception:
            log.exception("worker %s: error while stopping", self.worker_id)
        self._thread.stop(timeout)

    async def _astop(self) -> None:
        for task in list(self._background):
            if task.get_name() in ("lease-loop", "cancel-listener", "webhook-dispatcher", "reaper", "broker-relay"):
                task.cancel()
        pending = [t for t in self._background if not t.done()]
        if pending:  # callbacks still being delivered get a short grace period
            await asyncio.wait(pending, timeout=5.0)
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.workers.remove(self.worker_id)
            await self._store.aclose()
        if self.engine is not None:
            await self.engine.aclose()

    def begin_drain(self) -> None:
        """Stop claiming jobs; let the running ones finish within the drain limit (``drain_s``), then
        hand the rest back to their queue, attempt not counted.  Safe from a signal handler (Celery's
        ``worker_shutting_down``): Celery's warm shutdown then waits for the pool, i.e. for this."""
        if self.drain.stopping:
            return
        self.drain.stopping = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.loop.call_soon_threadsafe(self._spawn, self.drain.run(), "drain")

    def _spawn(self, coro: Any, name: str) -> None:
        task = self.loop.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _reaper(self) -> LeaseReaper:
        return LeaseReaper(
            self.store,
            recheck_s=max(10.0, self.settings.lease_s),
            unclaimed_after_s=max(10.0, self.settings.lease_s),
        )

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("engine host not started")
        return self._store

    # ------------------------------------------------------------------ jobs

    def run_job(self, job_id: str, queue: str | None = None, lane: int | None = None) -> float | None:
        """Run a job to its end (from a pool thread).  Returns a delay after which the message
        should be retried (the job runs under another live worker's lease), else ``None``.

        ``queue``/``lane``: where its message came from.  A batch message first takes a batch slot
        (:mod:`rerankd.worker.slots`), or goes back to its lane unclaimed when an interactive or
        low-lane message waits while the batch slots are busy."""
        if self.settings.amqp and lane is not None:  # delivered with an AMQP priority (rerankd.jobs.amqp)
            lane = lane_of(lane)
        batch = lane == BATCH and queue is not None and self.slots.reserved > 0
        if batch and not self.slots.acquire(self._upper_lanes_waiting):
            self._give_back(job_id, queue, lane, "batch slots busy while upper-lane work waits")
            return None
        try:
            return self._call(self.arun_job(job_id))
        except WorkerStopping:
            if queue is None:
                raise
            self._give_back(job_id, queue, lane or 0, "worker stopping")
            return None
        finally:
            if batch:
                self.slots.release()

    def _give_back(self, job_id: str, queue: str | None, lane: int | None, why: str) -> None:
        """Return a delivered message unclaimed, at the consuming end of its lane (no attempt)."""
        assert queue is not None
        self._call(give_back(self.store, job_id, queue, lane or 0))
        log.info("job %s: %s; message handed back unclaimed", job_id, why)

    def _call(self, coro: Awaitable[_T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def _upper_lanes_waiting(self) -> bool:
        if self.drain.stopping:
            return True
        try:
            return self._call(upper_lanes_waiting(self.store, self.queues))
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            log.warning("lane depths unavailable (%s); the batch message keeps waiting for a slot", e)
            return False

    async def arun_job(self, job_id: str) -> float | None:
        s = self.settings
        if self.drain.stopping:
            raise WorkerStopping(f"worker {self.worker_id} is stopping")
        self.drain.claiming += 1
        try:
            claim = await retrying(
                f"job {job_id}: claiming",
                lambda: self.store.claim(job_id, self.worker_id, s.lease_s, s.max_attempts),
                limit_s=CLAIM_RETRY_S,
            )
        finally:
            self.drain.claiming -= 1
        if claim.outcome == "busy":
            log.info("job %s runs under another worker's lease; retrying in %.1fs", job_id, claim.retry_in)
            return max(0.2, claim.retry_in + 0.1)
        if claim.outcome != "claimed":
            if claim.outcome in ("expired", "exhausted", "cancelled"):
                status = "failed" if claim.outcome == "exhausted" else claim.outcome
                log.warning("job %s: %s when delivered", job_id, claim.outcome)
                m = self.store.metrics()
                m.inc("jobs_finished_total", {"status": status, "model": s.model, "strategy": "unknown"})
                await self.store.flush_metrics(m)
            else:
                log.info("job %s: %s; message dropped", job_id, claim.outcome)
            return None
        await self._execute(job_id, claim)
        return None

    async def _execute(self, job_id: str, claim: ClaimResult) -> None:
        s = self.settings
        assert claim.request is not None and self.engine is not None
        entry = Running(attempt=claim.attempt)
        self.watch.running[job_id] = entry
        t_run = time.perf_counter()
        calibration = self.calibrations.find(claim.request.strategy)
        inner = asyncio.ensure_future(rerank(claim.request, self.engine, calibration=calibration))
        entry.task = inner
        if self.drain.handing_back:  # claimed after the drain limit passed
            self.watch.stop_local(job_id, "handback")
        result: RerankResult | None = None
        error: str | None = None
        code: Any = None
        try:
            done, _ = await asyncio.wait({inner}, timeout=claim.deadline_s)
            if not done:
                inner.cancel()
                with contextlib.suppress(BaseException):
                    await inner
                status, error, code = (
                    "failed",
                    f"deadline exceeded after {claim.deadline_s:g}s",
                    "deadline_exceeded",
                )
            elif inner.cancelled():
                if entry.reason == "lost":
                    log.warning("job %s: lease lost (another worker took over); result discarded", job_id)
                    return
                if entry.reason == "handback":
                    await self.drain.hand_back(self.store, job_id, claim.attempt, retrying)
                    return
                status, error, code = "cancelled", "cancelled on request", "cancelled"
            elif (exc := inner.exception()) is not None:
                if isinstance(exc, RerankInputError | CapabilityError | ValidationError | ValueError):
                    status, error, code = "failed", redact(str(exc), [socket.gethostname()]), "invalid_request"
                else:
                    log.error("job %s failed", job_id, exc_info=exc)
                    error = redact(f"{type(exc).__name__}: {exc}", [socket.gethostname()])  # full text: logged above
                    status, code = "failed", "engine_error"
            else:
                status, result = "succeeded", inner.result()
        except asyncio.CancelledError:
            inner.cancel()
            raise
        finally:
            self.watch.running.pop(job_id, None)
        m = self.store.metrics()
        record_metrics(m, claim, status, result, time.perf_counter() - t_run)
        times = await retrying(
            f"job {job_id}: recording {status}",
            lambda: self.store.finish(
                job_id,
                self.worker_id,
                claim.attempt,
                status,  # type: ignore[arg-type]
                ttl_s=s.job_ttl_s,
                result=result,
                error=error,
                error_code=code,
                metrics=m,
            ),
        )
        if times is None:
            log.warning(
                "job %s: attempt %d no longer holds the job; outcome %s discarded",
                job_id,
                claim.attempt,
                status,
            )
            return
        self.jobs_done += 1

    def _worker_info(self) -> dict[str, str]:
        """The worker's heartbeat fields that do not change while it runs."""
        s = self.settings
        return {
            "model": s.model,
            "engine": s.engine,
            "queues": ",".join(self.queues),
            "strategies": ",".join(self.strategies),
            "concurrency": str(s.worker_concurrency),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started_at": f"{self._started_at:.3f}",
        }


_HOST: EngineHost | None = None
_LOCK = threading.Lock()


def start_host(settings: Settings) -> EngineHost:
    """Start this process's engine host (idempotent)."""
    global _HOST
    with _LOCK:
        if _HOST is None:
            host = EngineHost(settings)
            host.start()
            _HOST = host
        return _HOST


def get_host() -> EngineHost:
    if _HOST is None:
        raise RuntimeError("no engine host in this process: the worker did not start one")
    return _HOST


def drain_host() -> None:
    """Start draining this process's engine host, if it has one (:meth:`EngineHost.begin_drain`)."""
    if _HOST is not None:
        _HOST.begin_drain()


def stop_host() -> None:
    global _HOST
    with _LOCK:
        if _HOST is not None:
            _HOST.stop()
            _HOST = None
