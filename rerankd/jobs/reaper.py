"""The reaper: jobs whose worker was lost go back to their queue when their lease expires.

A running job's lease (``lease_until``, renewed by its worker every few seconds) is mirrored
in the sorted set ``{prefix}:leases`` by the claim/renew/finish scripts.  :meth:`LeaseReaper.sweep`
reads the ids whose score is past the server's clock and runs ``reap.lua`` on each, which
checks the record again and, when the job is still running under an expired lease, pushes a
fresh broker message for it at the consuming end of its queue's lane (atomically with the
check, once per attempt).  A live worker then claims it as a new attempt (``claim.lua``: "lost" worker).

:meth:`LeaseReaper.sweep_unclaimed` covers the one gap leases leave: a worker that received a
message and died before claiming its job (no lease yet).  kombu's Redis transport keeps every
delivered, unacknowledged message in the ``unacked`` hash with its delivery time in
``unacked_index``; an entry older than ``unclaimed_after_s`` whose job is still ``queued`` is
replaced by a fresh message at the front of the job's lane (``reap_unclaimed.lua``).

:meth:`LeaseReaper.sweep_lost` covers the last one: kombu pops a message (BRPOP) before it records
it in ``unacked``, so a worker killed in between leaves a queued job with no message anywhere.
The job scripts keep ``{prefix}:queued`` (queued job ids scored by when their message was last
pushed, the message in the job's ``msg`` field, ``lua/queued.lua``); an entry older than
``unclaimed_after_s`` whose message is neither in its lane's list nor in ``unacked`` gets a fresh
message at the front of its lane (``reap_queued.lua``, which re-scores the entries it finds
waiting).  At most ``batch`` entries per sweep, only those past the threshold.  A duplicate message
is harmless: the claim of a running or finished job waits or is dropped.

With RabbitMQ as the broker (``RERANKD_BROKER_URL=amqp://``) only :meth:`LeaseReaper.sweep` runs,
and its message goes through the broker outbox (:mod:`rerankd.jobs.relay`): RabbitMQ itself
requeues the unacknowledged messages of a worker whose connection drops, so the two sweeps of
kombu's Redis structures have nothing to do, and a redelivered message takes its job over as soon
as the lost worker's heartbeat is gone (``lua/holder.lua``), before its lease expires.

Safe to run in many processes at once.  It does not depend on the broker's visibility timeout:
the message the lost worker held comes back only after that timeout, and is then dropped (job
finished) or waits (job running under a live lease).  Free of Celery: the caller gives the
function that builds a job's broker message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable

from rerankd.jobs.keys import UNACKED, UNACKED_INDEX
from rerankd.jobs.messages import task_message
from rerankd.jobs.scripts import lua
from rerankd.jobs.store import JobStore

__all__ = ["LeaseReaper"]

log = logging.getLogger(__name__)


class LeaseReaper:
    """Re-enqueues the jobs of lost workers (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        message_for: Callable[[str, str, int], str] = task_message,
        *,
        recheck_s: float = 120.0,
        batch: int = 100,
        unclaimed_after_s: float = 30.0,
        unacked_key: str = UNACKED,
        unacked_index_key: str = UNACKED_INDEX,
    ) -> None:
        """``message_for(job_id, queue, priority)``: the broker message that runs the job (the
        worker's task message unless a test injects another).  ``recheck_s``:
        a requeued job still unclaimed after this long gets another message (unless
        that message still waits in its queue).  ``unclaimed_after_s``:
        age of a delivered message whose job is still queued, past which its worker counts as lost."""
        self.store = store
        self.message_for = message_for
        self.recheck_s = recheck_s
        self.batch = batch
        self.unclaimed_after_s = unclaimed_after_s
        self.unacked_key = unacked_key
        self.unacked_index_key = unacked_index_key
        self.leases_key = store.keys.leases
        self.queued_key = store.keys.queued
        self._reap = store.r.register_script(lua("reap"))
        self._reap_unclaimed = store.r.register_script(lua("reap_unclaimed"))
        self._reap_queued = store.r.register_script(lua("reap_queued"))

    async def expired(self) -> list[str]:
        """Ids in the lease index whose lease is past the server's clock (oldest first)."""
        sec, usec = await self.store.r.time()
        now = float(sec) + float(usec) / 1e6
        ids = await self.store.r.zrangebyscore(self.leases_key, "-inf", now, start=0, num=self.batch)
        return [i.decode() for i in ids]

    async def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs put back on their queue."""
        ids = await self.expired()
        if not ids:
            return []
        pipe = self.store.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.store.job_key(job_id), "queue", "priority")
        rows = await pipe.execute()
        requeued: list[str] = []
        for job_id, (queue, priority) in zip(ids, rows, strict=True):
            q, p = (queue.decode() if queue else ""), int(priority or 0)
            lane = self.store.message_list(q, p)
            keys = [self.leases_key, self.store.job_key(job_id), self.store.log_key(job_id), lane]
            message = self.message_for(job_id, q, p) if q else ""
            out = await self._reap(keys=keys, args=[job_id, message, self.recheck_s])
            if out[0] == b"requeued":
                await self.store.publish([message])
                log.warning("job %s: lease of attempt %s expired (worker lost); requeued", job_id, out[1].decode())
                requeued.append(job_id)
        return requeued

    async def sweep_unclaimed(self) -> list[str]:
        """Requeue the jobs whose message was delivered ``unclaimed_after_s`` ago and which are still
        queued (see the module docstring); returns their ids."""
        sec, usec = await self.store.r.time()
        ceiling = float(sec) + float(usec) / 1e6 - self.unclaimed_after_s
        tags = await self.store.r.zrangebyscore(self.unacked_index_key, "-inf", ceiling, start=0, num=10 * self.batch)
        if not tags:
            return []
        payloads = await self.store.r.hmget(self.unacked_key, tags)
        candidates = [(t, j) for t, p in zip(tags, payloads, strict=True) if p and (j := _job_of(p, self.store.prefix))]
        if not candidates:
            return []
        pipe = self.store.r.pipeline(transaction=False)
        for _, job_id in candidates:
            pipe.hmget(self.store.job_key(job_id), "status", "queue", "priority")
        rows = await pipe.execute()
        requeued: list[str] = []
        for (tag, job_id), (status, queue, priority) in zip(candidates, rows, strict=True):
            if status != b"queued" or not queue:
                continue
            q, p = queue.decode(), int(priority or 0)
            keys = [self.unacked_index_key, self.unacked_key, self.store.job_key(job_id), self.store.keys.lane(q, p)]
            if await self._reap_unclaimed(keys=keys, args=[tag, self.message_for(job_id, q, p)]) == 1:
                log.warning("job %s: its message was delivered but never claimed (worker lost); requeued", job_id)
                requeued.append(job_id)
        return requeued

    async def sweep_lost(self) -> list[str]:
        """Requeue the queued jobs whose message was lost by a worker killed right after popping it
        (see the module docstring); returns their ids."""
        sec, usec = await self.store.r.time()
        ceiling = float(sec) + float(usec) / 1e6 - self.unclaimed_after_s
        ids = [i.decode() for i in await self.store.r.zrangebyscore(self.queued_key, "-inf", ceiling, 0, self.batch)]
        if not ids:
            return []
        pipe = self.store.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.store.job_key(job_id), "queue", "priority")
        rows = await pipe.execute()
        requeued: list[str] = []
        for job_id, (queue, priority) in zip(ids, rows, strict=True):
            q, p = (queue.decode() if queue else ""), int(priority or 0)
            lane = self.store.keys.lane(q, p) if q else self.store.keys.no_lane
            keys = [self.queued_key, self.store.job_key(job_id), self.store.log_key(job_id), lane, self.unacked_key]
            message = self.message_for(job_id, q, p) if q else ""
            if await self._reap_queued(keys=keys, args=[job_id, message, self.unclaimed_after_s]) == b"requeued":
                log.warning("job %s: its message was lost by a worker (popped, never recorded); requeued", job_id)
                requeued.append(job_id)
        return requeued

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled; Redis errors are logged and retried."""
        while True:
            try:
                await self.sweep()
                if self.store.broker_outbox is None:  # kombu's Redis lists only (see the module docstring)
                    await self.sweep_unclaimed()
                    await self.sweep_lost()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("reaper: sweep failed (%s: %s); retrying", type(e).__name__, e)
            await asyncio.sleep(interval_s)


def _job_of(payload: bytes, prefix: str) -> str | None:
    """The job id a kombu unacked entry (``[message, exchange, routing_key]``) runs, if it is one
    of ours (its routing key is a queue of ``prefix``)."""
    try:
        message, _, routing_key = json.loads(payload)
        if not str(routing_key).startswith(f"{prefix}."):
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
