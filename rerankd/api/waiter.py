"""Waiting for jobs to finish: one pub/sub listener per API process, futures per waiting request.

Workers publish an event when a job ends (:meth:`JobStore.finished_events
<rerankd.jobs.store.JobStore.finished_events>`).  A request
registers its future *before* the job is handed to the broker, so no event is missed;
a slow poll of the record covers events lost while the listener reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from rerankd.jobs import JobRecord, JobStore

log = logging.getLogger(__name__)


class JobWaiter:
    def __init__(self, store: JobStore, poll_s: float = 1.0) -> None:
        self.store = store
        self.poll_s = poll_s
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="rerankd-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def register(self, job_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(fut)
        return fut

    def unregister(self, job_id: str, fut: asyncio.Future[None]) -> None:
        group = self._waiters.get(job_id)
        if group is not None:
            group.discard(fut)
            if not group:
                del self._waiters[job_id]

    async def wait(self, job_id: str, fut: asyncio.Future[None], timeout: float) -> JobRecord | None:
        """The finished record, or ``None`` after ``timeout`` seconds (``fut`` from :meth:`register`)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), min(remaining, self.poll_s))
                record = await self.store.get(job_id, with_request=False)
                if record is None or record.terminal:
                    return record
        finally:
            self.unregister(job_id, fut)

    async def _listen(self) -> None:
        while True:
            try:
                async for job_id, _ in self.store.finished_events():
                    for fut in self._waiters.get(job_id, ()):
                        if not fut.done():
                            fut.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("job event listener: %s; reconnecting", e)
                await asyncio.sleep(1.0)
