"""Waiting for jobs to finish: one pub/sub listener per API process, futures per waiting request.

Each API process has an inbox channel (:meth:`JobStore.new_inbox
<rerankd.jobs.store.JobStore.new_inbox>`); a sync job names it in its ``reply_to`` field, and the
worker's finish script sends the finished record there, so the request answers without reading it
back.  Other endings (cancelled, expired, lost) come as events (:meth:`JobStore.endings
<rerankd.jobs.store.JobStore.endings>`), after which the record is read.  A request registers
its future *before* the job is handed to the broker, so no message is missed; a slow poll of the
record covers messages lost while the listener reconnects.
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
        self.inbox = store.new_inbox()
        """The channel to name in a waited-for job's ``reply_to`` field."""
        self._waiters: dict[str, set[asyncio.Future[JobRecord | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="rerankd-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def register(self, job_id: str) -> asyncio.Future[JobRecord | None]:
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(fut)
        return fut

    def unregister(self, job_id: str, fut: asyncio.Future[JobRecord | None]) -> None:
        group = self._waiters.get(job_id)
        if group is not None:
            group.discard(fut)
            if not group:
                del self._waiters[job_id]

    async def wait(self, job_id: str, fut: asyncio.Future[JobRecord | None], timeout: float) -> JobRecord | None:
        """The finished record, or ``None`` after ``timeout`` seconds (``fut`` from :meth:`register`)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(asyncio.TimeoutError):
                    sent = await asyncio.wait_for(asyncio.shield(fut), min(remaining, self.poll_s))
                    if sent is not None and sent.terminal:
                        return sent
                record = await self.store.get(job_id, with_request=False)
                if record is None or record.terminal:
                    return record
        finally:
            self.unregister(job_id, fut)

    async def _listen(self) -> None:
        while True:
            try:
                async for job_id, record in self.store.endings(self.inbox):
                    for fut in self._waiters.get(job_id, ()):
                        if not fut.done():
                            fut.set_result(record)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("job event listener: %s; reconnecting", e)
                await asyncio.sleep(1.0)
