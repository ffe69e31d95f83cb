"""What a sync call's waiter reads, against a real Redis: a record without its request, and the
record a finished job sends to the inbox its ``reply_to`` names."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from rerankd.jobs import JobStore, new_id
from tests.support.jobs import small_request, small_result

pytestmark = pytest.mark.anyio


async def test_a_record_read_without_its_request_has_every_other_field(store: JobStore) -> None:
    job_id = new_id()
    fields = store.job_fields(
        owner="alice",
        model="m",
        queue=f"{store.prefix}.m",
        request=small_request(5),
        deadline_s=10,
        max_attempts=2,
        callback_url="https://example.com/hook",
        custom_id="line-7",
    )
    assert (await store.create(job_id, fields, ttl_s=60)).outcome == "created"
    claim = await store.claim(job_id, "w1", 30, 2)
    assert claim.outcome == "claimed"
    assert await store.finish(job_id, "w1", claim.attempt, "succeeded", ttl_s=60, result=small_result())

    full = await store.get(job_id)
    light = await store.get(job_id, with_request=False)
    assert full is not None and light is not None
    assert full.request == small_request(5) and light.request is None
    assert light == full.model_copy(update={"request": None})
    assert light.status == "succeeded" and light.result == small_result() and light.worker == "w1"


async def test_a_missing_record_reads_as_none_either_way(store: JobStore) -> None:
    assert await store.get("job_missing") is None
    assert await store.get("job_missing", with_request=False) is None


async def _subscribed(store: JobStore, channel: str) -> None:
    """Wait until the server counts a subscriber of ``channel`` (messages before it would be lost)."""
    for _ in range(200):
        if (await store.r.pubsub_numsub(channel))[0][1]:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nobody subscribed to {channel}")


async def test_a_job_naming_an_inbox_sends_its_record_there_before_the_event(store: JobStore) -> None:
    inbox = store.new_inbox()
    endings = store.endings(inbox)
    first = asyncio.ensure_future(anext(endings))  # subscribes
    await _subscribed(store, inbox)
    waited, plain = new_id(), new_id()
    for job_id, reply_to in ((waited, inbox), (plain, None)):
        fields = store.job_fields(
            owner="alice", model="m", queue=f"{store.prefix}.m", request=small_request(), deadline_s=10, max_attempts=1
        )
        if reply_to:
            fields["reply_to"] = reply_to
        assert (await store.create(job_id, fields, ttl_s=60)).outcome == "created"
        claim = await store.claim(job_id, "w1", 30, 1)
        assert await store.finish(job_id, "w1", claim.attempt, "succeeded", ttl_s=60, result=small_result())
    got = [await asyncio.wait_for(first, 30), *[await asyncio.wait_for(anext(endings), 30) for _ in range(2)]]
    await endings.aclose()

    assert [(job_id, record is not None) for job_id, record in got] == [(waited, True), (waited, False), (plain, False)]
    sent = got[0][1]
    assert sent is not None and sent == await store.get(waited, with_request=False)
    assert sent.status == "succeeded" and sent.result == small_result()


async def test_a_cancelled_job_naming_an_inbox_comes_as_an_event(store: JobStore) -> None:
    inbox = store.new_inbox()
    endings = store.endings(inbox)
    first = asyncio.ensure_future(anext(endings))
    await _subscribed(store, inbox)
    job_id = new_id()
    fields = store.job_fields(
        owner="alice", model="m", queue=f"{store.prefix}.m", request=small_request(), deadline_s=10, max_attempts=1
    )
    fields["reply_to"] = inbox
    assert (await store.create(job_id, fields, ttl_s=60)).outcome == "created"
    assert (await store.cancel(job_id, "alice"))[0] == "cancelled"
    assert await asyncio.wait_for(first, 30) == (job_id, None)
    await endings.aclose()


@pytest.mark.anyio
async def test_a_burst_past_the_pool_size_waits_for_connections(redis_url: str) -> None:
    """100 sync callers at once used to get 503 (redis-py's MaxConnectionsError); the pool now
    makes them wait for a free connection."""
    store = JobStore.from_url(redis_url, f"burst-{secrets.token_hex(3)}", max_connections=4)
    try:
        replies = await asyncio.gather(*(store.r.ping() for _ in range(200)))
        assert all(replies)
    finally:
        await store.aclose()
