"""Batches: a hash of metadata and status counts, and the list of their job ids.

:meth:`BatchStore.submit` creates a batch whole in one Lua script (``lua/create_batch.lua``):
every job record, every broker message on the model's batch lane, the batch record, the
counters, or nothing.  The batch hash keeps ``n_<status>`` counts that the job scripts move at
every transition (``lua/counters.lua``), so a batch's status is one read whatever its size;
:meth:`BatchStore.item_ids` pages through its jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from rerankd.jobs.keys import Keys
from rerankd.jobs.quotas import Quota
from rerankd.jobs.record import TERMINAL, CreateResult
from rerankd.jobs.relay import BrokerOutbox
from rerankd.jobs.scripts import lua

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")


class BatchStore:
    """Batch records in Redis (``{prefix}:batch:{id}`` and ``...:items``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.r: Any = client
        self.keys = keys
        self.prefix = keys.prefix
        self._submit = client.register_script(lua("create_batch"))
        self.broker_outbox: BrokerOutbox | None = None
        """RabbitMQ broker only: messages go there (:meth:`rerankd.jobs.store.JobStore.use_broker_outbox`)."""

    def batch_key(self, batch_id: str) -> str:
        return self.keys.batch(batch_id)

    def batch_items_key(self, batch_id: str) -> str:
        return self.keys.batch_items(batch_id)

    async def submit(
        self,
        batch_id: str,
        owner: str,
        jobs: Sequence[tuple[str, Mapping[str, str], str]],
        meta: Mapping[str, str],
        *,
        ttl_s: int,
        idem_key: str,
        idempotency: tuple[str, str] | None = None,
        max_depth: int | None = None,
        max_batch_depth: int | None = None,
        quota: Quota | None = None,
    ) -> CreateResult:
        """Create batch ``batch_id`` of ``jobs`` ``(job_id, fields, message)`` atomically.

        Outcomes: ``created``; ``existing``/``conflict`` (``idempotency`` ``(key, body_hash)``
        already names a batch, with the same / another body; ``idem_key`` is its Redis key);
        ``full`` (``job_id`` names the list: an interactive queue at ``max_depth``, or a batch
        lane that ``jobs`` would take past ``max_batch_depth``); ``quota``."""
        queues: dict[tuple[str, str, str], int] = {}
        job_args: list[Any] = []
        for job_id, fields, message in jobs:
            lane = self.keys.lane(fields["queue"], int(fields.get("priority", 0)))
            if self.broker_outbox is not None:
                lane = self.broker_outbox.key
            key = (fields["queue"], lane, fields.get("model", ""))
            queues[key] = queues.get(key, 0) + 1
            job_args += [job_id, message, lane, len(fields)]
            for k, v in fields.items():
                job_args += [k, v]
        args: list[Any] = [
            self.prefix,
            ttl_s,
            "1" if idempotency else "0",
            idempotency[1] if idempotency else "",
            batch_id,
            -1 if max_depth is None else max_depth,
            -1 if max_batch_depth is None else max_batch_depth,
            owner,
            len(queues),
        ]
        for (queue, lane, model), n in queues.items():
            args += [queue, lane, n, model]
        args.append(len(meta))
        for k, v in meta.items():
            args += [k, v]
        args += [len(jobs), *job_args]
        if quota is not None:
            args += quota.script_args(self.prefix)
        keys = [self.batch_key(batch_id), self.batch_items_key(batch_id), idem_key]
        out = await self._submit(keys=keys, args=args)
        if out[0] == b"created" and self.broker_outbox is not None:
            await self.broker_outbox.publish([message for _, _, message in jobs])
        if out[0] == b"quota":
            retry = float(out[3]) if out[3] else None
            return CreateResult("quota", "", limit=out[1].decode(), current=int(out[2]), retry_after_s=retry)
        return CreateResult(outcome=out[0].decode(), job_id=out[1].decode())

    async def info(self, batch_id: str) -> dict[str, str] | None:
        """The batch's hash (``owner``, ``total``, ``created_at``, ``n_<status>``...), or ``None``."""
        meta = await self.r.hgetall(self.batch_key(batch_id))
        return {k.decode(): v.decode() for k, v in meta.items()} if meta else None

    @staticmethod
    def counts(info: Mapping[str, str]) -> dict[str, int]:
        """Jobs of the batch by status (from the counters the job scripts keep)."""
        return {s: max(0, int(info.get(f"n_{s}", "0"))) for s in STATUSES}

    @staticmethod
    def state(info: Mapping[str, str]) -> str:
        """``completed`` once every job of the batch is final, else ``in_progress``."""
        counts = BatchStore.counts(info)
        return "completed" if sum(counts[s] for s in TERMINAL) >= int(info.get("total", "0")) else "in_progress"

    @staticmethod
    def listed(info: Mapping[str, str], name: str) -> list[str]:
        """A comma-joined field of the batch (``models``, ``strategies``) as a list."""
        return [x for x in info.get(name, "").split(",") if x]

    async def item_ids(self, batch_id: str, start: int, count: int) -> list[str]:
        """Job ids ``start .. start + count - 1`` in input order."""
        if count <= 0:
            return []
        ids = await self.r.lrange(self.batch_items_key(batch_id), start, start + count - 1)
        return [i.decode() for i in ids]

    async def result_rows(self, job_ids: Sequence[str]) -> list[list[bytes | None]]:
        """``[custom_id, status, result, error, error_code]`` of each job (raw; all ``None``: expired)."""
        pipe = self.r.pipeline(transaction=False)
        for j in job_ids:
            pipe.hmget(self.keys.job(j), "custom_id", "status", "result", "error", "error_code")
        return list(await pipe.execute())
