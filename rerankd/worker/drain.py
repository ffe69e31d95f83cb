"""A stopping worker's drain (SIGTERM; Celery's warm shutdown waits for the running tasks).

From the moment the worker starts stopping it claims no new job (:class:`WorkerStopping`: the
task puts the message back on its queue).  Its running jobs get up to the drain limit
(``RERANKD_DRAIN_S``, at most the job deadline) to finish; those still running then are cancelled
and handed back to their queue (:meth:`rerankd.jobs.JobStore.hand_back`: ``queued`` again, their
message at the front of their lane, the attempt not counted), so an ordinary stop never costs a job
an attempt and never ends in ``worker_lost``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rerankd.jobs import JobStore
from rerankd.worker.watch import JobWatch

__all__ = ["HANDBACK_RETRY_S", "Drain", "WorkerStopping"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

HANDBACK_RETRY_S = 10.0
"""How long a stopping worker keeps trying to hand a job back while Redis is away (then the job is
reclaimed from its expired lease, as a new attempt)."""


class WorkerStopping(Exception):
    """The worker is stopping: it claims no new job."""


class Drain:
    """The drain state of one worker: ``stopping`` (no new claims), ``handing_back`` (the limit has
    passed), ``claiming`` (claims in flight, whose jobs the drain waits for too)."""

    def __init__(self, watch: JobWatch, worker_id: str, limit_s: float) -> None:
        self.watch = watch
        self.worker_id = worker_id
        self.limit_s = limit_s
        self.stopping = False
        self.handing_back = False
        self.claiming = 0

    async def run(self) -> None:
        """Wait for the running jobs up to the limit, then cancel the rest for a hand-back."""
        log.info(
            "worker %s stopping: claims no new job; %d running job(s) get up to %gs to finish "
            "(RERANKD_DRAIN_S), then go back to their queue",
            self.worker_id,
            len(self.watch.running),
            self.limit_s,
        )
        deadline = asyncio.get_running_loop().time() + self.limit_s
        while (self.watch.running or self.claiming) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        self.handing_back = True
        for job_id in list(self.watch.running):
            log.warning("job %s: still running after the drain limit (%gs); handing it back", job_id, self.limit_s)
            self.watch.stop_local(job_id, "handback")

    async def hand_back(
        self,
        store: JobStore,
        job_id: str,
        attempt: int,
        retrying: Callable[[str, Callable[[], Awaitable[bool]], float], Awaitable[bool]],
    ) -> None:
        """Hand ``job_id``'s ``attempt`` back (``retrying``: the host's retry through Redis outages)."""
        try:
            held = await retrying(
                f"job {job_id}: handing back",
                lambda: store.hand_back(job_id, self.worker_id, attempt),
                HANDBACK_RETRY_S,
            )
        except Exception as e:
            log.warning("job %s: not handed back (%s); it is reclaimed once its lease expires", job_id, e)
            return
        if held:
            log.info("job %s: handed back to its queue (worker stopping); attempt %d not counted", job_id, attempt)
        else:
            log.warning("job %s: attempt %d no longer holds the job; nothing handed back", job_id, attempt)
