"""Interactive slots: the part of a worker's concurrency that batch jobs never take.

A worker runs up to ``concurrency`` jobs at once (Celery pool threads).  Batch jobs may hold at
most ``concurrency - reserved`` of them.  A pool thread that receives a batch message while those
are all busy parks: it runs the batch job as soon as a batch slot frees, but hands its message
back (to the consuming end of its lane, so the batch order is kept) as soon as an interactive or
low-lane message waits in one of the worker's queues.  The freed thread lets the consumer take
that message next (kombu's BRPOP asks the upper lanes first), so an interactive job never waits
for a batch job to finish, only for a poll (``poll_s``) and a broker round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BatchSlots"]


class BatchSlots:
    """Counts the batch jobs a worker runs; keeps ``reserved`` slots for the upper lanes."""

    def __init__(self, concurrency: int, reserved: int, poll_s: float = 0.1) -> None:
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._running = 0
        self.resize(concurrency, reserved)

    def resize(self, concurrency: int, reserved: int) -> None:
        """Set the pool size and the reserved slots (``reserved < concurrency`` unless both are 0)."""
        if reserved and reserved >= concurrency:
            raise ValueError(f"interactive slots ({reserved}) must be below the worker's concurrency ({concurrency})")
        with self._cond:
            self.concurrency, self.reserved = concurrency, reserved
            self._cond.notify_all()

    @property
    def limit(self) -> int:
        """How many batch jobs may run at once."""
        return self.concurrency - self.reserved

    @property
    def running(self) -> int:
        return self._running

    def acquire(self, upper_lanes_waiting: Callable[[], bool]) -> bool:
        """Take a batch slot (``True``), waiting while they are all busy; ``False`` as soon as
        ``upper_lanes_waiting()`` says an interactive or low-lane message waits (the caller then
        hands its batch message back)."""
        while True:
            with self._cond:
                if self._running < self.limit:
                    self._running += 1
                    return True
                self._cond.wait(self.poll_s)
                if self._running < self.limit:
                    self._running += 1
                    return True
            if upper_lanes_waiting():  # outside the lock: it asks Redis
                return False

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify()
