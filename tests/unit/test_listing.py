"""Pages over an owner index (rerankd.jobs.listing.walk) on a real Redis: ties, filters,
expired entries; the API's cursors and bad parameters (rerankd.api.listing)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from rerankd.api import listing
from rerankd.api.errors import ApiError
from rerankd.jobs import listing as walker


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def r(private_redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(private_redis_url)
    yield client
    await client.aclose()


async def _fill(r: Any, prefix: str, n: int, expired: set[int]) -> list[str]:
    """``n`` items, three per timestamp (ties), item i's hash holds ``kind = i % 3``."""
    ids = [f"j{i:03d}" for i in range(n)]
    for i, j in enumerate(ids):
        await r.zadd(f"{prefix}:ix", {j: 1000.0 + i // 3})
        if i not in expired:
            await r.hset(f"{prefix}:h:{j}", mapping={"kind": str(i % 3)})
    return ids


async def _pages(r: Any, prefix: str, filters: listing.Filters, limit: int, kind: str | None = None) -> list[str]:
    def read(pipe: Any, m: str) -> None:
        pipe.hmget(f"{prefix}:h:{m}", "kind")

    def keep(_: str, reply: list[bytes | None]) -> bool:
        return kind is None or reply[0] == kind.encode()

    out, after = [], None
    for _ in range(100):
        ids, after = await walker.walk(r, f"{prefix}:ix", filters, after, limit, read, keep)
        out += ids
        if after is None:
            return out
    raise AssertionError("no end")


@pytest.mark.anyio
async def test_pages_cover_every_item_once_newest_first(r: Any) -> None:
    prefix = f"test-list-{secrets.token_hex(4)}"
    try:
        ids = await _fill(r, prefix, 31, expired={4, 17})
        live = [j for i, j in enumerate(ids) if i not in {4, 17}]
        newest_first = sorted(live, key=lambda j: (1000 + int(j[1:]) // 3, j), reverse=True)
        for limit in (1, 2, 3, 7, 100):
            assert await _pages(r, prefix, listing.Filters(), limit) == newest_first
        assert await r.zcard(f"{prefix}:ix") == 29  # expired entries dropped as met
        kind1 = [j for j in newest_first if int(j[1:]) % 3 == 1]
        assert await _pages(r, prefix, listing.Filters(), 2, kind="1") == kind1
        window = listing.Filters(created_after=1002.0, created_before=1005.0)  # exclusive bounds
        assert await _pages(r, prefix, window, 2) == [j for j in newest_first if 1003 <= 1000 + int(j[1:]) // 3 <= 1004]
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)


def test_bad_parameters_name_the_parameter() -> None:
    with pytest.raises(ApiError) as e:
        listing.decode_cursor("not-a-cursor")
    assert e.value.status == 422
    with pytest.raises(ApiError, match="status"):
        listing.parse_filters("done", None, None, None, None, listing.JOB_STATUSES)
    with pytest.raises(ApiError, match="created_after"):
        listing.parse_filters(None, None, None, float("nan"), None, listing.JOB_STATUSES)
    with pytest.raises(ApiError, match="before"):
        listing.parse_filters(None, None, None, 5.0, 4.0, listing.JOB_STATUSES)
    with pytest.raises(ApiError, match="limit"):
        listing.check_limit(101)
    score, member = listing.decode_cursor(listing.encode_cursor(1700000000.123456, "job_x|y"))
    assert (score, member) == (1700000000.123456, "job_x|y")
