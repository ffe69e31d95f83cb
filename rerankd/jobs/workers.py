"""Worker heartbeats: a hash per live worker with a TTL, and a set of known ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from rerankd.jobs.keys import Keys


def listed(info: Mapping[str, str], name: str) -> list[str]:
    """A comma-joined heartbeat field (``queues``, ``strategies``) as a list."""
    return [x for x in info.get(name, "").split(",") if x]


class WorkerRegistry:
    """Live workers in Redis (``{prefix}:worker:{id}`` expiring hashes, ``{prefix}:workers``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.r: Any = client
        self.keys = keys

    @property
    def workers_key(self) -> str:
        return self.keys.workers

    def worker_key(self, worker_id: str) -> str:
        return self.keys.worker(worker_id)

    async def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        key = self.worker_key(worker_id)
        pipe.hset(key, mapping=dict(info))
        pipe.expire(key, max(1, int(ttl_s + 0.999)))
        pipe.zadd(self.workers_key, {worker_id: 0})
        await pipe.execute()

    async def remove(self, worker_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.worker_key(worker_id))
        pipe.zrem(self.workers_key, worker_id)
        await pipe.execute()

    async def live(self) -> list[dict[str, str]]:
        """Workers whose heartbeat has not expired (stale ids are pruned)."""
        ids = [i.decode() for i in await self.r.zrange(self.workers_key, 0, -1)]
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.worker_key(i))
        rows = await pipe.execute()
        live, dead = [], []
        for i, h in zip(ids, rows, strict=False):
            if h:
                live.append({"id": i, **{k.decode(): v.decode() for k, v in h.items()}})
            else:
                dead.append(i)
        if dead:
            await self.r.zrem(self.workers_key, *dead)
        return live
