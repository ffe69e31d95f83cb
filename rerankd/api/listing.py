"""``GET /v1/jobs`` and ``GET /v1/batches``: a tenant's jobs and batches, newest first.

Each owner has an index in Redis, a sorted set of ids scored by creation time
(``{prefix}:owner:{owner}:jobs`` kept by ``lua/create.lua``: jobs of ``POST /v1/jobs`` and of
the synchronous rerank routes; ``...:batches`` kept by ``lua/create_batch.lua``).  Jobs of a
batch are listed through their batch.  A page walks the index from the cursor, reads the
filtered fields of each entry in one pipeline and stops after ``limit`` matches or
:data:`MAX_SCAN` entries, so a request costs at most ``MAX_SCAN`` reads whatever the filters;
ids whose record has expired are dropped from the index as they are met.

The cursor is opaque (base64 of ``created_at`` and id of the last entry looked at): pass
``next_cursor`` back to get the next page; ``next_cursor`` is ``null`` on the last page.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rerankd.api.batch_views import batch_status
from rerankd.api.errors import ApiError
from rerankd.jobs import JobRecord, JobStore, views

MAX_LIMIT = 100
MAX_SCAN = 2000
"""Index entries looked at per request at most (a page may come back short with a cursor)."""
_CHUNK = 200
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
BATCH_STATUSES = ("in_progress", "completed")


@dataclass(frozen=True)
class Filters:
    """What a listing keeps; ``None`` keeps everything."""

    status: frozenset[str] | None = None
    model: str | None = None
    strategy: str | None = None
    created_after: float | None = None
    created_before: float | None = None


def parse_filters(
    status: str | None,
    model: str | None,
    strategy: str | None,
    created_after: float | None,
    created_before: float | None,
    statuses: Sequence[str],
) -> Filters:
    """Validate the query parameters (422 naming the parameter)."""
    wanted = None
    if status:
        wanted = frozenset(s.strip() for s in status.split(",") if s.strip())
        bad = sorted(wanted - set(statuses))
        if bad:
            raise ApiError(422, f"status: unknown {bad}, expected some of {list(statuses)}", field="status")
    for name, value in (("created_after", created_after), ("created_before", created_before)):
        if value is not None and not math.isfinite(value):
            raise ApiError(422, f"{name}: a Unix time in seconds, got {value}", field=name)
    if created_after is not None and created_before is not None and created_after >= created_before:
        raise ApiError(422, "created_after must be before created_before", field="created_after")
    return Filters(wanted, model or None, strategy or None, created_after, created_before)


def encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}|{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = raw.split("|", 1)
        return float(score), member
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ApiError(422, "cursor: not a cursor this API returned", field="cursor") from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, f"limit must be between 1 and {MAX_LIMIT}, got {limit}", field="limit", limit=MAX_LIMIT)
    return limit


async def walk(
    r: Any,
    index: str,
    filters: Filters,
    cursor: str | None,
    limit: int,
    read: Callable[[Any, str], None],
    keep: Callable[[str, Any], bool],
) -> tuple[list[str], str | None]:
    """``(ids kept, next cursor)`` walking ``index`` newest first.  ``read(pipe, id)`` queues the
    reads of one entry; ``keep(id, reply)`` says whether it matches (``reply`` None: expired)."""
    high: float | str = "+inf" if filters.created_before is None else f"({filters.created_before!r}"
    low: float | str = "-inf" if filters.created_after is None else f"({filters.created_after!r}"
    after: tuple[float, str] | None = None
    if cursor:
        after = decode_cursor(cursor)
        if filters.created_before is None or after[0] < filters.created_before:
            high = repr(after[0])
    kept: list[str] = []
    scanned = offset = 0
    last: tuple[float, str] | None = None
    while scanned < MAX_SCAN:
        rows = await r.zrevrangebyscore(index, high, low, start=offset, num=_CHUNK, withscores=True)
        if not rows:
            return kept, None
        offset += len(rows)
        entries = [(m.decode(), float(s)) for m, s in rows]
        if after is not None:  # ties at the cursor's score come in descending id order
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
                    return kept, encode_cursor(s, m)
            if scanned >= MAX_SCAN:
                break
        if stale:
            await r.zrem(index, *stale)
            offset -= len(stale)
        if len(rows) < _CHUNK:
            return kept, None
    return kept, (encode_cursor(*last) if last else None)


_JOB_FIELDS = ("status", "model", "strategy")


async def list_jobs(store: JobStore, owner: str, filters: Filters, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of the owner's jobs (no results: ``GET /v1/jobs/{id}`` has them)."""

    def read(pipe: Any, job_id: str) -> None:
        pipe.hmget(store.job_key(job_id), *_JOB_FIELDS)

    def keep(_: str, reply: list[bytes | None]) -> bool:
        status, model, strategy = (v.decode() if v else "" for v in reply)
        return (
            (filters.status is None or status in filters.status)
            and (filters.model is None or model == filters.model)
            and (filters.strategy is None or strategy == filters.strategy)
        )

    index = f"{store.prefix}:owner:{owner}:jobs"
    ids, next_cursor = await walk(store.r, index, filters, cursor, check_limit(limit), read, keep)
    records = await store.get_many(ids) if ids else []
    data = []
    for record in records:
        if record is None:
            continue
        data.append(summary(record))
    return {"object": "list", "data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None}


def summary(record: JobRecord) -> dict[str, Any]:
    """A job in a listing: its view without the ranking (sizes and warning count instead)."""
    out = views.job_view(record)
    result = out.pop("result")
    out["kind"] = record.kind
    out["documents"] = len(record.request.candidates) if record.request is not None else None
    out["warnings"] = len(result.get("warnings") or []) if result else 0
    return out


async def list_batches(store: JobStore, owner: str, filters: Filters, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of the owner's batches with their status and counts."""
    infos: dict[str, dict[str, str]] = {}

    def read(pipe: Any, batch_id: str) -> None:
        pipe.hgetall(store.batches.batch_key(batch_id))

    def keep(batch_id: str, reply: dict[bytes, bytes]) -> bool:
        info = {k.decode(): v.decode() for k, v in reply.items()}
        status = batch_status(batch_id, info)
        if filters.status is not None and status["status"] not in filters.status:
            return False
        models = set(filter(None, info.get("models", "").split(",")))
        strategies = set(filter(None, info.get("strategies", "").split(",")))
        if filters.model is not None and filters.model not in models:
            return False
        if filters.strategy is not None and filters.strategy not in strategies:
            return False
        infos[batch_id] = info
        return True

    index = f"{store.prefix}:owner:{owner}:batches"
    ids, next_cursor = await walk(store.r, index, filters, cursor, check_limit(limit), read, keep)
    data = []
    for batch_id in ids:
        info = infos[batch_id]
        view = batch_status(batch_id, info)
        view["models"] = [m for m in info.get("models", "").split(",") if m]
        view["strategies"] = [s for s in info.get("strategies", "").split(",") if s]
        data.append(view)
    return {"object": "list", "data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None}
