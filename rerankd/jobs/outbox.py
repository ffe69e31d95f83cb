"""The webhook outbox in Redis: which job callbacks are due, who is delivering them.

``{prefix}:outbox:due`` is a sorted set of job ids scored by when a dispatcher should next look
at them.  A job with a ``callback_url`` enters it in the same Lua step as its terminal
transition (``outbox_add`` in ``lua/outbox.lua``, called by ``finish`` and ``terminate``), so
no crash can lose a callback.  The delivery's state lives in the job's hash:
``callback_attempts``, ``callback_holder`` (the dispatcher of the current attempt) and
``callback_status`` (``retrying``, ``delivered`` or ``failed``: all tenants see).

:meth:`Outbox.claim` takes due entries under a lease (their score moves to now + lease), so
an entry whose dispatcher dies comes due again; :meth:`Outbox.complete` settles an attempt or
schedules the next one, and is ignored once another dispatcher has taken the delivery over.
The scripts reach job hashes by name from the prefix (one Redis, not a cluster), as
``lua/counters.lua`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rerankd.jobs.keys import Keys
from rerankd.jobs.scripts import lua

__all__ = ["Claimed", "Outbox", "Outcome"]

Outcome = Literal["delivered", "retrying", "failed"]


@dataclass(frozen=True)
class Claimed:
    job_id: str
    attempt: int
    """1, 2, ...; 0: the delivery had used all its attempts (crashed dispatchers) and is now failed."""


class Outbox:
    """Claims and settles callback deliveries (see the module docstring)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.r: Any = client
        self.prefix = prefix
        self.due_key = Keys(prefix).outbox_due
        self._claim = client.register_script(lua("outbox_claim"))
        self._done = client.register_script(lua("outbox_done"))

    async def claim(self, holder: str, lease_s: float, limit: int, max_attempts: int) -> list[Claimed]:
        """Up to ``limit`` due deliveries, each now held by ``holder`` for ``lease_s`` seconds."""
        out = await self._claim(keys=[self.due_key], args=[holder, lease_s, limit, max_attempts, self.prefix])
        return [Claimed(out[i].decode(), int(out[i + 1])) for i in range(0, len(out), 2)]

    async def complete(self, job_id: str, holder: str, attempt: int, outcome: Outcome, retry_in_s: float = 0.0) -> bool:
        """Record an attempt's outcome (``retrying``: due again in ``retry_in_s``); ``False`` when
        ``holder`` no longer holds the delivery."""
        out = await self._done(
            keys=[self.due_key], args=[job_id, holder, str(attempt), outcome, f"{retry_in_s:.3f}", self.prefix]
        )
        return int(out) == 1

    async def pending(self) -> int:
        """Deliveries not yet settled."""
        return int(await self.r.zcard(self.due_key))
