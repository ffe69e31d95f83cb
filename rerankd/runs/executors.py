"""Executors: how the pending queries of a run get executed.

An :data:`Executor` takes the pending requests and yields ``(position, result)`` pairs as they
finish, in any order.  :func:`engine_executor` runs them in-process against one engine;
:class:`rerankd.runs.queue_executor.QueueExecutor` submits them as jobs to the service API
(``rerankd rerank --queue``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from rerankd.engines.base import Engine
from rerankd.types import RerankRequest, RerankResult

__all__ = ["Executor", "engine_executor", "fan_out"]

Executor = Callable[[Sequence[RerankRequest]], AsyncIterator[tuple[int, RerankResult]]]
"""Runs the given requests; yields ``(position in the given sequence, result)`` as each finishes."""


async def fan_out(
    count: int, concurrency: int, run_one: Callable[[int], Awaitable[RerankResult]]
) -> AsyncIterator[tuple[int, RerankResult]]:
    """Run ``run_one(i)`` for ``i`` in ``range(count)``, ``concurrency`` at a time; yield
    ``(i, result)`` as each finishes.  The first error stops the others and is raised."""
    todo = iter(range(count))
    done: asyncio.Queue[tuple[int, RerankResult] | BaseException | None] = asyncio.Queue()

    async def slot() -> None:
        try:
            for i in todo:  # the shared iterator hands each index to one slot
                done.put_nowait((i, await run_one(i)))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # surfaced to the consumer, which stops the run
            done.put_nowait(e)
        finally:
            done.put_nowait(None)

    slots = [asyncio.create_task(slot()) for _ in range(min(concurrency, count))]
    running = len(slots)
    try:
        while running:
            item = await done.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for s in slots:
            s.cancel()
        await asyncio.gather(*slots, return_exceptions=True)


def engine_executor(engine: Engine, concurrency: int = 1) -> Executor:
    """An in-process executor: ``concurrency`` queries at a time against ``engine``."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")

    def execute(requests: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        from rerankd.strategies import rerank

        return fan_out(len(requests), concurrency, lambda i: rerank(requests[i], engine))

    return execute
