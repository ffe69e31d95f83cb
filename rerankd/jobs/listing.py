"""An owner's jobs and batches, newest first, read page by page from the owner indexes.

Each owner has an index in Redis, a sorted set of ids scored by creation time
(:meth:`Keys.owner_jobs <rerankd.jobs.keys.Keys.owner_jobs>`, kept by ``lua/create.lua``: jobs of
``POST /v1/jobs`` and of the synchronous rerank routes; :meth:`~rerankd.jobs.keys.Keys.owner_batches`,
kept by ``lua/create_batch.lua``).  Jobs of a batch are listed through their batch.  A page walks
the index from a position, reads the filtered fields of each entry in one pipeline and stops after
``limit`` matches or :data:`MAX_SCAN` entries, so a page costs at most ``MAX_SCAN`` reads whatever
the filters; ids whose record has expired are dropped from the index as they are met.

A position is ``(created_at, id)`` of the last entry looked at; the API turns it into an opaque
cursor (:mod:`rerankd.api.listing`).  Used through :meth:`JobStore.list_jobs
<rerankd.jobs.store.JobStore.list_jobs>` and :meth:`~rerankd.jobs.store.JobStore.list_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rerankd.jobs.batches import STATUSES, BatchStore
from rerankd.jobs.keys import Keys
from rerankd.jobs.record import JobRecord

__all__ = ["BATCH_STATUSES", "JOB_STATUSES", "MAX_SCAN", "Filters", "Position", "list_batches", "list_jobs", "walk"]

MAX_SCAN = 2000


class _Store(Protocol):
    """What a listing reads of :class:`rerankd.jobs.store.JobStore` (which calls it)."""

    r: Any
    keys: Keys

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]: ...


"""Index entries looked at per page at most (a page may come back short with a next position)."""
_CHUNK = 200
JOB_STATUSES = STATUSES
BATCH_STATUSES = ("in_progress", "completed")
Position = tuple[float, str]
"""``(created_at, id)`` of the last index entry a page looked at."""


@dataclass(frozen=True)
class Filters:
    """What a listing keeps; ``None`` keeps everything (time bounds are exclusive)."""

    status: frozenset[str] | None = None
    model: str | None = None
    strategy: str | None = None
    created_after: float | None = None
    created_before: float | None = None


async def walk(
    r: Any,
    index: str,
    filters: Filters,
    after: Position | None,
    limit: int,
    read: Callable[[Any, str], None],
    keep: Callable[[str, Any], bool],
) -> tuple[list[str], Position | None]:
    """``(ids kept, next position)`` walking ``index`` newest first from ``after``.  ``read(pipe, id)``
    queues the reads of one entry; ``keep(id, reply)`` says whether it matches (``reply`` None: expired)."""
    high: float | str = "+inf" if filters.created_before is None else f"({filters.created_before!r}"
    low: float | str = "-inf" if filters.created_after is None else f"({filters.created_after!r}"
    if after is not None and (filters.created_before is None or after[0] < filters.created_before):
        high = repr(after[0])
    kept: list[str] = []
    scanned = offset = 0
    last: Position | None = None
    while scanned < MAX_SCAN:
        rows = await r.zrevrangebyscore(index, high, low, start=offset, num=_CHUNK, withscores=True)
        if not rows:
            return kept, None
        offset += len(rows)
        entries = [(m.decode(), float(s)) for m, s in rows]
        if after is not None:  # ties at the position's score come in descending id order
            entries = [(m, s) for m, s in entries if s < after[0] or m < after[1]]
        pipe = r.pipeline(transaction=False)
        for m, _ in entries:
            read(pipe, m)
        replies = await pipe.execute() if entries else []
        stale = []
        for (m, s), reply in zip(entries, replies, strict=True):
            scanned += 1
            last = (s, m)
            if not reply or (isinstance(reply, list) and reply[0] is None):
                stale.append(m)
                continue
            if keep(m, reply):
                kept.append(m)
                if len(kept) == limit:
                    if stale:
                        await r.zrem(index, *stale)
                    return kept, (s, m)
            if scanned >= MAX_SCAN:
                break
        if stale:
            await r.zrem(index, *stale)
            offset -= len(stale)
        if len(rows) < _CHUNK:
            return kept, None
    return kept, last


_JOB_FIELDS = ("status", "model", "strategy")


async def list_jobs(
    store: _Store, owner: str, filters: Filters, after: Position | None, limit: int
) -> tuple[list[JobRecord], Position | None]:
    """A page of the owner's job records (with their requests) and the next position."""

    def read(pipe: Any, job_id: str) -> None:
        pipe.hmget(store.keys.job(job_id), *_JOB_FIELDS)

    def keep(_: str, reply: list[bytes | None]) -> bool:
        status, model, strategy = (v.decode() if v else "" for v in reply)
        return (
            (filters.status is None or status in filters.status)
            and (filters.model is None or model == filters.model)
            and (filters.strategy is None or strategy == filters.strategy)
        )

    ids, position = await walk(store.r, store.keys.owner_jobs(owner), filters, after, limit, read, keep)
    records = await store.get_many(ids) if ids else []
    return [r for r in records if r is not None], position


async def list_batches(
    store: _Store, owner: str, filters: Filters, after: Position | None, limit: int
) -> tuple[list[tuple[str, dict[str, str]]], Position | None]:
    """A page of the owner's batches as ``(batch_id, info)`` (:meth:`BatchStore.info`) and the next
    position; ``filters.status`` holds :data:`BATCH_STATUSES`, ``model``/``strategy`` keep the batches
    with a line of it."""
    infos: dict[str, dict[str, str]] = {}

    def read(pipe: Any, batch_id: str) -> None:
        pipe.hgetall(store.keys.batch(batch_id))

    def keep(batch_id: str, reply: dict[bytes, bytes]) -> bool:
        info = {k.decode(): v.decode() for k, v in reply.items()}
        if filters.status is not None and BatchStore.state(info) not in filters.status:
            return False
        if filters.model is not None and filters.model not in BatchStore.listed(info, "models"):
            return False
        if filters.strategy is not None and filters.strategy not in BatchStore.listed(info, "strategies"):
            return False
        infos[batch_id] = info
        return True

    ids, position = await walk(store.r, store.keys.owner_batches(owner), filters, after, limit, read, keep)
    return [(i, infos[i]) for i in ids], position
