"""Batches: a hash of metadata and the list of their job ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis


class BatchStore:
    """Batch records in Redis (``{prefix}:batch:{id}`` and ``...:items``)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r: Any = client
        self.prefix = prefix

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batch_items_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:items"

    async def create(
        self, batch_id: str, owner: str, items: Sequence[str], meta: Mapping[str, str], ttl_s: int
    ) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.batch_key(batch_id), mapping={"id": batch_id, "owner": owner, **meta})
        pipe.expire(self.batch_key(batch_id), ttl_s)
        if items:
            pipe.rpush(self.batch_items_key(batch_id), *items)
            pipe.expire(self.batch_items_key(batch_id), ttl_s)
        await pipe.execute()

    async def get(self, batch_id: str) -> tuple[dict[str, str], list[str]] | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.batch_key(batch_id))
        pipe.lrange(self.batch_items_key(batch_id), 0, -1)
        meta, items = await pipe.execute()
        if not meta:
            return None
        return {k.decode(): v.decode() for k, v in meta.items()}, [i.decode() for i in items]
