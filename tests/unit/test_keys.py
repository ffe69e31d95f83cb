"""The key names of rerankd.jobs.keys are the ones the Lua scripts write (they build some from the
prefix themselves), and the store methods the API uses instead of Redis calls read them back."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from rerankd.jobs import JobStore
from rerankd.jobs.keys import Keys, lane_key
from rerankd.jobs.listing import Filters
from rerankd.jobs.quotas import BATCH, INTERACTIVE
from rerankd.jobs.record import new_id
from tests.support.jobs import small_request, small_result

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[JobStore]:
    st = JobStore.from_url(redis_url, f"test-keys-{secrets.token_hex(4)}")
    yield st
    keys = [k async for k in st.r.scan_iter(match=f"{st.prefix}*")]
    if keys:
        await st.r.delete(*keys)
    await st.aclose()


async def _create(store: JobStore, owner: str = "alice", priority: int = 0, callback_url: str | None = None) -> str:
    """A queued job with its broker message on its lane."""
    job_id = new_id()
    fields = store.job_fields(
        owner=owner,
        model="m",
        queue=f"{store.prefix}.m",
        request=small_request(),
        deadline_s=10,
        max_attempts=3,
        callback_url=callback_url,
        priority=priority,
    )
    assert (await store.create(job_id, fields, ttl_s=60, message=f"msg {job_id}")).outcome == "created"
    return job_id


async def test_scripts_write_the_keys_keys_names(store: JobStore) -> None:
    k = store.keys
    job_id = await _create(store, owner="alice", callback_url="http://example.com/hook")
    assert await store.r.exists(k.job(job_id), k.log(job_id)) == 2
    assert await store.r.zscore(k.owner_jobs("alice"), job_id) is not None
    assert await store.r.zscore(k.queued, job_id) is not None
    assert await store.r.zscore(k.inflight("alice"), job_id) is not None
    assert await store.r.sismember(k.inflight_owners, "alice")
    assert await store.r.hgetall(k.metric("g:jobs_by_status"))
    await store.claim(job_id, "w", 30, 3)
    assert await store.r.zscore(k.leases, job_id) is not None
    await store.finish(job_id, "w", 1, "succeeded", ttl_s=60, result=small_result())
    assert await store.r.zscore(k.leases, job_id) is None
    assert await store.r.zscore(k.outbox_due, job_id) is not None  # a callback is due
    assert await store.finished_per_minute([int(time.time() // 60)]) in ([1], [0])  # 0: the minute turned
    assert k.idem("a", "x") == k.idem("a", "x") != k.idem("b", "x") and k.batch_idem("a", "x") == k.idem("a", "batch:x")
    assert Keys(store.prefix).lane("q", BATCH) == lane_key("q", BATCH) == "q\x06\x169"


async def test_store_reads_the_api_uses(store: JobStore) -> None:
    await store.ping()
    queue = f"{store.prefix}.m"
    ids = [await _create(store, owner="bob") for _ in range(3)]
    await _create(store, owner="bob", priority=BATCH)
    depths = await store.lane_depths([queue, f"{store.prefix}.other"])
    assert depths[queue][INTERACTIVE] == 3 and depths[queue][BATCH] == 1
    assert sum(depths[f"{store.prefix}.other"].values()) == 0
    records, after = await store.list_jobs("bob", Filters(status=frozenset({"queued"})), None, 2)
    assert after is not None and len(records) == 2
    rest, end = await store.list_jobs("bob", Filters(), after, 10)
    assert end is None and {r.id for r in records + rest} >= set(ids)
    assert (await store.list_batches("bob", Filters(), None, 10)) == ([], None)


async def test_finished_events_and_cancel_requests(store: JobStore) -> None:
    events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    cancels: asyncio.Queue[str] = asyncio.Queue()

    async def pump_events() -> None:
        async for e in store.finished_events():
            await events.put(e)

    async def pump_cancels() -> None:
        async for c in store.cancel_requests():
            await cancels.put(c)

    tasks = [asyncio.create_task(pump_events()), asyncio.create_task(pump_cancels())]
    try:
        await asyncio.sleep(0.2)  # subscribed
        running = await _create(store)
        await store.claim(running, "w", 30, 3)
        assert await store.cancel(running, None) == ("cancelling", None)
        assert await asyncio.wait_for(cancels.get(), 5) == running
        queued = await _create(store)
        assert (await store.cancel(queued, None))[0] == "cancelled"
        assert await asyncio.wait_for(events.get(), 5) == (queued, "cancelled")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
