"""An asyncio event loop running forever in a daemon thread, fed from other threads.

Engines bind to one loop (vLLM's ``AsyncLLM``, the hf engine's micro-batcher), so code that
calls them from many threads or many ``asyncio.run`` calls hands its coroutines to one of these.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str, *, start: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start the thread (once; ``LoopThread(..., start=False)`` defers it)."""
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it (from another thread)."""
        return self.submit(coro).result(timeout)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from the caller's event loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the loop, join the thread and close the loop (if the thread ended)."""
        if self.loop.is_closed():
            return
        if not self._thread.is_alive():
            self.loop.close()
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self.loop.close()
