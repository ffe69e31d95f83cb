"""Micro-batching of engine calls made by concurrently running coroutines.

Each call becomes a job on a per-event-loop queue; a background task takes what is waiting
(up to ``max_batch_size`` jobs with an equal key), and runs them as one batch on an executor
(the engine's single model thread), so the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStats", "MicroBatcher", "RunBatch"]

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Counters of the batches an engine ran (for tests, metrics and benchmarks)."""

    batches: int = 0
    items: int = 0
    max_size: int = 0
    recent_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=256))

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.max_size = max(self.max_size, size)
        self.recent_sizes.append(size)


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future[Any]


RunBatch = Callable[[Hashable, list[Any]], list[Any]]
"""Runs one batch in the worker thread: one result (or exception instance) per payload."""


class MicroBatcher:
    """Gathers jobs submitted by concurrent coroutines into batches run on a worker thread.

    Jobs batch together only when their ``key`` is equal (e.g. same kind and ``max_tokens``).
    Bound to the event loop it was created in.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        executor: ThreadPoolExecutor,
        max_batch_size: int,
        stats: BatchStats | None = None,
        window_s: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.loop = asyncio.get_running_loop()
        self.stats = stats if stats is not None else BatchStats()
        self._run_batch = run_batch
        self._executor = executor
        self._max = max_batch_size
        self._window_s = window_s
        self._pending: deque[_Job] = deque()
        self._inflight: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._task = self.loop.create_task(self._worker(), name="rerankd-hf-batcher")

    async def submit_many(self, key: Hashable, payloads: Sequence[Any]) -> list[Any]:
        """Queue one job per payload and wait for all their results (same order)."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if not payloads:
            return []
        futures = []
        for payload in payloads:
            fut: asyncio.Future[Any] = self.loop.create_future()
            self._pending.append(_Job(key, payload, fut))
            futures.append(fut)
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    def _take(self) -> tuple[Hashable, list[_Job]]:
        while self._pending and self._pending[0].future.done():  # cancelled by their callers
            self._pending.popleft()
        if not self._pending:
            return None, []
        key = self._pending[0].key
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            if job.future.done():  # cancelled by its caller
                continue
            if job.key == key and len(batch) < self._max:
                batch.append(job)
            else:
                rest.append(job)
        self._pending = rest
        return key, batch

    async def _worker(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # let coroutines that are ready right now enqueue their jobs too
            await (asyncio.sleep(self._window_s) if self._window_s > 0 else asyncio.sleep(0))
            key, jobs = self._take()
            if not jobs:
                continue
            self._inflight = jobs
            self.stats.record(len(jobs))
            try:
                results = await self.loop.run_in_executor(
                    self._executor, self._run_batch, key, [j.payload for j in jobs]
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.exception("batch of %d failed", len(jobs))
                results = [e] * len(jobs)
            finally:
                self._inflight = []
            for job, res in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)

    async def aclose(self) -> None:
        """Stop the worker task and fail every job still waiting."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for job in [*self._inflight, *self._pending]:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the engine was closed"))
        self._pending.clear()
