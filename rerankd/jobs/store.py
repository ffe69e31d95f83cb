"""The Redis job store, shared by the API and the worker; it is the truth about a job.

One hash per job (``{prefix}:job:{id}``) holds status, owner, request, result, error,
attempts and timestamps; a list beside it (``...:log``) keeps its transitions.  Every
transition is one Lua script, so it is atomic and uses the server's clock:

``queued -> running``      :meth:`JobStore.claim`: a worker increments ``attempts`` and takes
                           a lease (renewed while it runs).  A redelivered message finds the
                           job running under a live lease (``busy``: try later), finished
                           (``done``: drop it) or running under an expired lease (the worker
                           was lost: claim again, or fail once ``max_attempts`` is spent).
``running -> succeeded|failed|cancelled``  :meth:`JobStore.finish`, only by the worker that
                           holds the current attempt, so a job never records two results.
``running -> queued``      :meth:`JobStore.hand_back`: a stopping worker returns a job it could
                           not finish in time; its attempt is not counted.
``queued -> cancelled``    :meth:`JobStore.cancel`; a running job gets ``cancel_requested``
                           and a message on the cancel channel; its worker stops it.
``queued -> expired``      a job nobody waits for any more (a synchronous request that
                           timed out) or past its ``expires_at`` when a worker gets it.

Every terminal transition publishes ``"<id> <status>"`` on ``{prefix}:events``.

The scripts live in ``lua/*.lua`` (:mod:`rerankd.jobs.scripts`); metrics in
:mod:`rerankd.jobs.metrics`; batches and worker heartbeats in their own modules.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from rerankd.jobs import events
from rerankd.jobs.batches import BatchStore
from rerankd.jobs.keys import Keys
from rerankd.jobs.metrics import MetricsWriter
from rerankd.jobs.outbox import Outbox
from rerankd.jobs.quotas import Quota
from rerankd.jobs.record import ClaimResult, CreateResult, ErrorCode, JobRecord, JobStatus, _s
from rerankd.jobs.relay import BrokerOutbox
from rerankd.jobs.scripts import lua
from rerankd.jobs.store_reads import StoreReads
from rerankd.jobs.workers import WorkerRegistry
from rerankd.types import RerankRequest, RerankResult

StoreUnavailable = redis.exceptions.RedisError
"""Raised when the job store cannot be reached or answers with an error (the API's 503)."""


class JobStore(StoreReads):
    """Async access to job records in Redis; ``batches`` and ``workers`` hold the rest."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r: Any = client  # redis-py's typing of replies is too loose to be useful
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.events_channel = self.keys.events
        self.cancel_channel = self.keys.cancel
        self._create = client.register_script(lua("create"))
        self._claim = client.register_script(lua("claim"))
        self._renew = client.register_script(lua("renew"))
        self._finish = client.register_script(lua("finish"))
        self._cancel = client.register_script(lua("cancel"))
        self._expire = client.register_script(lua("expire_queued"))
        self.batches = BatchStore(client, self.keys)
        self.workers = WorkerRegistry(client, self.keys)
        self.broker_outbox: BrokerOutbox | None = None
        """RabbitMQ broker only: job scripts write messages there (:mod:`rerankd.jobs.relay`)."""

    def use_broker_outbox(self, outbox: BrokerOutbox) -> None:
        """Send every job's message through ``outbox`` (RabbitMQ) instead of kombu's Redis lists."""
        self.broker_outbox = self.batches.broker_outbox = outbox

    def message_list(self, queue: str, priority: int) -> str:
        """Where a script writes a message of ``queue``'s lane ``priority``: the lane's Redis list,
        or the broker outbox (``lua/broker.lua``)."""
        return self.broker_outbox.key if self.broker_outbox else self.keys.lane(queue, priority)

    async def publish(self, messages: Sequence[str]) -> None:
        """After a script wrote ``messages`` to the broker outbox: publish them (no-op on Redis)."""
        if self.broker_outbox is not None:
            await self.broker_outbox.publish(messages)

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float = 5.0, max_connections: int = 64) -> JobStore:
        # A blocking pool: past max_connections a caller waits (up to timeout_s) for a free
        # connection instead of failing, so a burst of requests is served, not answered 503.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        return cls(aioredis.Redis.from_pool(pool), prefix)

    async def aclose(self) -> None:
        if self.broker_outbox is not None:
            self.broker_outbox.close()
        await self.r.aclose()

    async def ping(self) -> None:
        """One round trip to Redis (raises ``redis.exceptions.RedisError`` when it is unreachable)."""
        await self.r.ping()

    def outbox(self) -> Outbox:
        """The webhook outbox of this store's deployment."""
        return Outbox(self.r, self.prefix)

    # ------------------------------------------------------------------ create / read

    @staticmethod
    def job_fields(
        *,
        owner: str,
        model: str,
        queue: str,
        request: RerankRequest,
        deadline_s: float,
        max_attempts: int,
        kind: str = "job",
        callback_url: str | None = None,
        expires_in: float | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
        priority: int = 0,
    ) -> dict[str, str]:
        """The initial hash fields of a job (besides id, status, attempts, created_at).

        ``expires_in``: seconds after creation past which a worker that gets the job while it
        is still queued marks it ``expired`` instead of running it."""
        fields = {
            "owner": owner,
            "kind": kind,
            "model": model,
            "queue": queue,
            "strategy": request.strategy.name,
            "request": request.model_dump_json(),
            "deadline_s": repr(float(deadline_s)),
            "max_attempts": str(max_attempts),
        }
        if callback_url:
            fields["callback_url"] = callback_url
        if expires_in is not None:  # turned into expires_at with the server's clock
            fields["expires_in"] = f"{expires_in:.6f}"
        if batch_id is not None:
            fields["batch_id"] = batch_id
        if custom_id is not None:
            fields["custom_id"] = custom_id
        if priority:  # the lane (kombu priority step) of the job's message, see rerankd.jobs.quotas
            fields["priority"] = str(priority)
        return fields

    def _create_args(
        self,
        job_id: str,
        fields: Mapping[str, str],
        ttl_s: int,
        max_depth: int | None,
        idempotency: tuple[str, str, str] | None,
        message: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        queue = self.message_list(fields["queue"], int(fields.get("priority", 0)))
        idem = self.keys.idem(idempotency[0], idempotency[1]) if idempotency else self.keys.no_idem
        keys = [self.job_key(job_id), self.log_key(job_id), queue, idem]
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        args = [
            -1 if max_depth is None else max_depth,
            ttl_s,
            "1" if idempotency else "0",
            idempotency[2] if idempotency else "",
            job_id,
            message or "",
            len(fields),
            *flat,
        ]
        return keys, args

    def queue_key(self, queue: str) -> str:
        """The Redis list of a broker queue (kombu's redis transport names it after the queue)."""
        return self.keys.queue(queue)

    async def create(
        self,
        job_id: str,
        fields: Mapping[str, str],
        *,
        ttl_s: int,
        max_depth: int | None = None,
        idempotency: tuple[str, str, str] | None = None,
        metrics: MetricsWriter | None = None,
        message: str | None = None,
        quota: Quota | None = None,
    ) -> CreateResult:
        """Create a queued job unless the queue is over ``max_depth`` or the idempotency key
        ``(owner, key, body_hash)`` already names a job (same body: ``existing``; other: ``conflict``).
        When the job is created, ``message`` (the broker message that runs it) is pushed on its
        queue and ``metrics`` are applied, atomically with the record.  ``quota``: the owner's
        quotas are checked (outcome ``quota``) and taken in the same script."""
        keys, args = self._create_args(job_id, fields, ttl_s, max_depth, idempotency, message)
        if metrics is not None and metrics.ops:
            mkeys, margs = metrics.script_args(len(keys) + 1)
            keys, args = keys + mkeys, args + margs
        elif quota is not None:
            args.append(0)  # no metric ops: the quota arguments follow
        if quota is not None:
            args += quota.script_args(self.prefix)
        out = await self._create(keys=keys, args=args)
        if out[0] == b"created" and message:
            await self.publish([message])
        if out[0] == b"quota":
            retry = float(out[3]) if out[3] else None
            return CreateResult("quota", "", limit=out[1].decode(), current=int(out[2]), retry_after_s=retry)
        return CreateResult(outcome=out[0].decode(), job_id=out[1].decode())

    # ------------------------------------------------------------------ events

    async def finished_events(self) -> AsyncIterator[tuple[str, str]]:
        """``(job_id, status)`` of every terminal transition from now on (:func:`events.messages`)."""
        async for data in events.messages(self.r, self.events_channel):
            job_id, _, status = data.partition(" ")
            yield job_id, status

    def new_inbox(self) -> str:
        """A reply channel for one process (:meth:`endings`; a job names it in its ``reply_to`` field)."""
        return self.keys.reply(secrets.token_hex(8))

    async def endings(self, inbox: str) -> AsyncIterator[tuple[str, JobRecord | None]]:
        """``(job_id, record)`` of every terminal transition from now on: the job's record (less its
        request) for a job whose ``reply_to`` is ``inbox`` (``finish.lua`` sends it there, before
        the event), else ``None`` (an event only)."""
        async for channel, data in events.channel_messages(self.r, inbox, self.events_channel):
            if channel == inbox:
                try:
                    record = JobRecord.from_hash(json.loads(data), with_request=False)
                except (ValueError, KeyError):  # unreadable here: the event that follows has it read
                    continue
                yield record.id, record
            else:
                yield data.partition(" ")[0], None

    def cancel_requests(self) -> AsyncIterator[str]:
        """Ids of running jobs whose cancel was requested from now on (:func:`events.messages`)."""
        return events.messages(self.r, self.cancel_channel)

    # ------------------------------------------------------------------ transitions

    async def claim(self, job_id: str, worker_id: str, lease_s: float, max_attempts: int) -> ClaimResult:
        out = await self._claim(
            keys=[self.job_key(job_id), self.log_key(job_id)],
            args=[worker_id, lease_s, max_attempts, self.events_channel],
        )
        outcome = out[0].decode()
        if outcome == "busy":
            return ClaimResult(outcome="busy", retry_in=float(out[1]))
        if outcome != "claimed":
            return ClaimResult(outcome=outcome)
        return ClaimResult(
            outcome="claimed",
            attempt=int(out[1]),
            request=RerankRequest.model_validate_json(out[2]),
            deadline_s=float(out[3]),
            created_at=float(out[4]),
            started_at=float(out[5]),
            model=out[6].decode(),
            strategy=out[7].decode(),
            callback_url=_s(out[8]),
        )

    async def renew(self, jobs: Sequence[tuple[str, int]], worker_id: str, lease_s: float) -> list[int]:
        """Extend the leases of ``(job_id, attempt)`` pairs: -1 lost, 0 ok, 1 cancel requested."""
        if not jobs:
            return []
        args: list[Any] = [worker_id, lease_s, *(str(a) for _, a in jobs)]
        out = await self._renew(
            keys=[self.job_key(j) for j, _ in jobs],
            args=args,
        )
        return [int(x) for x in out]

    async def finish(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        status: JobStatus,
        *,
        ttl_s: int,
        result: RerankResult | None = None,
        error: str | None = None,
        error_code: ErrorCode | None = None,
        metrics: MetricsWriter | None = None,
    ) -> tuple[float, float, float] | None:
        """Record the outcome of the caller's attempt; ``None`` when it no longer holds the job
        (nothing is written, ``metrics`` included).  Returns ``(created_at, started_at, finished_at)``."""
        args: list[Any] = [
            worker_id,
            str(attempt),
            status,
            self.events_channel,
            ttl_s,
            result.model_dump_json() if result is not None else "",
            error or "",
            error_code or "",
        ]
        keys = [self.job_key(job_id), self.log_key(job_id)]
        if metrics is not None and metrics.ops:
            mkeys, margs = metrics.script_args(len(keys) + 1)
            keys, args = keys + mkeys, args + margs
        out = await self._finish(keys=keys, args=args)
        if int(out[0]) != 1:
            return None
        return float(out[1]), float(out[2]), float(out[3])

    async def hand_back(self, job_id: str, worker_id: str, attempt: int, reason: str = "stopping") -> bool:
        """``running -> queued``, the caller's attempt not counted (:mod:`rerankd.jobs.handback`)."""
        from rerankd.jobs.handback import hand_back

        return await hand_back(self, job_id, worker_id, attempt, reason)

    async def cancel(self, job_id: str, owner: str | None) -> tuple[str, str | None]:
        """Cancel for ``owner`` (``None``: anyone).  ``("cancelled"|"cancelling"|"missing", None)``
        or ``("final", status)``."""
        out = await self._cancel(
            keys=[self.job_key(job_id), self.log_key(job_id)],
            args=[owner or "", "", "", self.events_channel, self.cancel_channel],
        )
        return out[0].decode(), (out[1].decode() if len(out) > 1 else None)

    async def expire_if_queued(self, job_id: str) -> bool:
        out = await self._expire(
            keys=[self.job_key(job_id), self.log_key(job_id)], args=["", "", "", self.events_channel]
        )
        return int(out) == 1

    async def set_field(self, job_id: str, name: str, value: str) -> None:
        await self.r.hset(self.job_key(job_id), name, value)
