"""Owners take turns within a lane (lua/fair.lua): the order in which BRPOP hands out messages."""

from __future__ import annotations

import json
from base64 import b64decode

import pytest

from rerankd.jobs import JobStore, new_id
from rerankd.jobs.messages import task_message
from tests.support.jobs import small_request

pytestmark = pytest.mark.anyio


async def _create(store: JobStore, owner: str, priority: int = 0) -> str:
    job_id = new_id()
    queue = f"{store.prefix}.m"
    fields = store.job_fields(
        owner=owner, model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3
    )
    fields["priority"] = str(priority)
    out = await store.create(job_id, fields, ttl_s=60, message=task_message(job_id, queue, priority))
    assert out.outcome == "created"
    return job_id


async def _next(store: JobStore, priority: int = 0) -> str | None:
    """The next job a worker runs from the lane: BRPOP, claim; a message whose claim finds its job
    ended (cancelled) is dropped, as a worker does."""
    while True:
        raw = await store.r.rpop(store.keys.lane(f"{store.prefix}.m", priority))
        if raw is None:
            return None
        job_id = str(json.loads(b64decode(json.loads(raw)["body"]))[0][0])
        claim = await store.claim(job_id, "w1", 30, 3)
        if claim.outcome == "claimed":
            return job_id
        assert claim.outcome == "done"


async def test_one_owner_is_fifo(store: JobStore) -> None:
    ids = [await _create(store, "alice") for _ in range(5)]
    assert [await _next(store) for _ in ids] == ids
    assert await _next(store) is None


async def test_a_flood_does_not_go_ahead_of_another_owner(store: JobStore) -> None:
    a = [await _create(store, "alice") for _ in range(6)]
    b1 = await _create(store, "bob")
    # alice's first job and bob's share the first turn; alice's other five wait behind bob's
    assert [await _next(store), await _next(store)] == [a[0], b1]
    assert await _next(store) == a[1]
    # alice is at her quota with 4 queued; bob's next job goes before all of them
    b2 = await _create(store, "bob")
    assert await _next(store) == b2
    assert [await _next(store) for _ in range(4)] == a[2:]


async def test_three_owners_round_robin(store: JobStore) -> None:
    jobs = {o: [await _create(store, o) for _ in range(3)] for o in ("a", "b", "c")}
    order = [await _next(store) for _ in range(9)]
    assert order == [jobs[o][i] for i in range(3) for o in ("a", "b", "c")]


async def test_lanes_are_ordered_separately(store: JobStore) -> None:
    batch = [await _create(store, "alice", priority=9) for _ in range(3)]
    inter = [await _create(store, "bob", priority=0), await _create(store, "alice", priority=0)]
    assert [await _next(store, 0) for _ in inter] == inter
    assert [await _next(store, 9) for _ in batch] == batch


async def test_cancelled_and_taken_messages_keep_the_order(store: JobStore) -> None:
    a = [await _create(store, "alice") for _ in range(3)]
    assert (await store.cancel(a[1], "alice")) is not None
    b = await _create(store, "bob")
    # a[1]'s message is still in the list (its claim drops it); bob goes after alice's first
    lane = store.keys.lane(f"{store.prefix}.m", 0)
    raw = await store.r.rpop(lane)
    assert raw is not None and a[0] in b64decode(json.loads(raw)["body"]).decode()
    await store.claim(a[0], "w1", 30, 3)
    assert await _next(store) == b
    members = await store.r.zrange(f"{store.prefix}:fair:{lane}", 0, -1)
    assert [m.decode().split("|")[1] for m in members] == [a[2]]


async def test_a_second_batch_interleaves_one_job_each(store: JobStore) -> None:
    """Two owners' batches on the batch lane: one pass per batch, turns one job each."""
    queue = f"{store.prefix}.m"

    async def batch(owner: str, n: int) -> list[str]:
        jobs = []
        for _ in range(n):
            job_id = new_id()
            fields = store.job_fields(
                owner=owner, model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3
            )
            fields["priority"] = "9"
            jobs.append((job_id, fields, task_message(job_id, queue, 9)))
        out = await store.batches.submit(
            new_id("batch"), owner, jobs, {}, ttl_s=60, idem_key=store.keys.batch_idem(owner, None)
        )
        assert out.outcome == "created"
        return [j for j, _, _ in jobs]

    a = await batch("alice", 50)
    b = await batch("bob", 5)
    order = [await _next(store, 9) for _ in range(55)]
    assert order[:10] == [x for pair in zip(a[:5], b, strict=True) for x in pair]
    assert order[10:] == a[5:]
    assert await _next(store, 9) is None
