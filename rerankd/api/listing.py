"""``GET /v1/jobs`` and ``GET /v1/batches``: the query parameters of a listing, its cursor, and the
page as the API answers it.  The walk over the owner indexes is :mod:`rerankd.jobs.listing`
(through :meth:`JobStore.list_jobs <rerankd.jobs.store.JobStore.list_jobs>` and
:meth:`~rerankd.jobs.store.JobStore.list_batches`).

The cursor is opaque (base64 of ``created_at`` and id of the last entry looked at): pass
``next_cursor`` back to get the next page; ``next_cursor`` is ``null`` on the last page.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Query

from rerankd.api.batch_views import batch_status
from rerankd.api.errors import ApiError
from rerankd.jobs import JobRecord, JobStore, views
from rerankd.jobs.batches import BatchStore
from rerankd.jobs.listing import BATCH_STATUSES, JOB_STATUSES, MAX_SCAN, Filters, Position

__all__ = [
    "BATCH_STATUSES",
    "JOB_STATUSES",
    "MAX_LIMIT",
    "MAX_SCAN",
    "PAGE_DOC",
    "After",
    "Before",
    "Cursor",
    "Filters",
    "Limit",
    "Model",
    "Strategy",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "list_batches",
    "list_jobs",
    "parse_filters",
    "summary",
]

MAX_LIMIT = 100

# the query parameters both listings take
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
Limit = Annotated[int, Query(description=f"Items per page, 1 to {MAX_LIMIT}.")]
Model = Annotated[str | None, Query(description="Only this served model (the name jobs show, not an alias).")]
Strategy = Annotated[str | None, Query(description="Only this strategy (e.g. `sliding_window`, `icr`).")]
After = Annotated[float | None, Query(description="Only items created after this Unix time (seconds).")]
Before = Annotated[float | None, Query(description="Only items created before this Unix time (seconds).")]
PAGE_DOC = (
    " Newest first. A page may hold fewer than `limit` items (at most "
    f"{MAX_SCAN} entries are examined per request) and still have a `next_cursor`."
)


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


async def list_jobs(store: JobStore, owner: str, filters: Filters, cursor: str | None, limit: int) -> dict[str, Any]:
    """A page of the owner's jobs (no results: ``GET /v1/jobs/{id}`` has them)."""
    records, position = await store.list_jobs(owner, filters, *_window(cursor, limit))
    return _page([summary(r) for r in records], position)


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
    rows, position = await store.list_batches(owner, filters, *_window(cursor, limit))
    data = []
    for batch_id, info in rows:
        view = batch_status(batch_id, info)
        view["models"] = BatchStore.listed(info, "models")
        view["strategies"] = BatchStore.listed(info, "strategies")
        data.append(view)
    return _page(data, position)


def _window(cursor: str | None, limit: int) -> tuple[Position | None, int]:
    """``(after, limit)`` of a page (the limit is checked first, as the API always did)."""
    limit = check_limit(limit)
    return (decode_cursor(cursor) if cursor else None), limit


def _page(data: list[dict[str, Any]], position: Position | None) -> dict[str, Any]:
    next_cursor = encode_cursor(*position) if position is not None else None
    return {"object": "list", "data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None}
