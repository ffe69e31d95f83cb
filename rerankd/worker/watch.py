"""The running jobs of one worker, watched from its engine loop.

Every round (a third of the lease, at most 2 s) :meth:`JobWatch.lease_loop` renews the leases
of the running jobs, stops those whose cancel flag is set or whose lease another worker took,
and writes the worker's heartbeat (read by ``/healthz`` and the metrics);
:meth:`JobWatch.cancel_listener` stops a job as soon as its cancel request is published.
Both log and carry on through Redis outages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from rerankd.jobs import JobStore
from rerankd.types import RerankResult

__all__ = ["JobWatch", "Running"]

log = logging.getLogger(__name__)


@dataclass
class Running:
    """A job running on this worker: its attempt, its task and why it was stopped (if it was)."""

    attempt: int
    task: asyncio.Task[RerankResult] | None = None
    reason: str | None = None  # "cancelled" | "lost" | "handback" (the worker is stopping)


class JobWatch:
    """The worker's running jobs (``running``, filled by the host) and the tasks that watch them."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.running: dict[str, Running] = {}

    def stop_local(self, job_id: str, reason: str) -> None:
        """Cancel ``job_id``'s task here, noting ``reason`` ("cancelled", "lost" or "handback")."""
        entry = self.running.get(job_id)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.reason = reason
            entry.task.cancel()

    async def lease_loop(self, store: JobStore, lease_s: float, info: dict[str, str], done: Callable[[], int]) -> None:
        """Renew leases, stop cancelled or lost jobs and write the heartbeat (``info`` plus the
        running and ``done()`` counts), every round until cancelled."""
        interval = min(lease_s / 3.0, 2.0)
        while True:
            try:
                jobs = [(j, e.attempt) for j, e in self.running.items()]
                states = await store.renew(jobs, self.worker_id, lease_s)
                for (job_id, _), state in zip(jobs, states, strict=True):
                    if state == -1:
                        self.stop_local(job_id, "lost")
                    elif state == 1:
                        self.stop_local(job_id, "cancelled")
                await store.workers.heartbeat(
                    self.worker_id,
                    {
                        **info,
                        "running": str(len(self.running)),
                        "done": str(done()),
                        "seen": f"{time.time():.3f}",
                    },
                    ttl_s=interval * 3 + 1,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("worker %s: lease/heartbeat round failed: %s", self.worker_id, e)
            await asyncio.sleep(interval)

    async def cancel_listener(self, store: JobStore) -> None:
        """Stop a running job when its cancel request is published; reconnect after errors."""
        while True:
            try:
                async for job_id in store.cancel_requests():
                    if job_id in self.running:
                        log.info("job %s: cancel requested", job_id)
                        self.stop_local(job_id, "cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("worker %s: cancel listener: %s; reconnecting", self.worker_id, e)
                await asyncio.sleep(1.0)
