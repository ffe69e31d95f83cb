"""RabbitMQ as the broker, without RabbitMQ: the broker outbox (written with the job, published and
removed, republished after a crash), the AMQP form of a message, and the heartbeat takeover of a
lost worker's job (which holds for either broker).  The real broker: tests/integration/test_rabbitmq.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from rerankd.jobs import JobStore, new_id
from rerankd.jobs.amqp import MAX_PRIORITY, amqp_priority, amqp_queue, decode
from rerankd.jobs.messages import TASK_NAME, task_message
from rerankd.jobs.quotas import BATCH, INTERACTIVE, LOW
from rerankd.jobs.reaper import LeaseReaper
from rerankd.jobs.relay import BrokerOutbox
from tests.support.jobs import small_request

pytestmark = pytest.mark.anyio


class FakeBroker:
    """Records what it is given; fails while ``down``."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def publish(self, messages: Sequence[str]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.sent.extend(messages)

    def close(self) -> None:
        pass


def _outbox(store: JobStore, broker: FakeBroker, grace_s: float = 0.3) -> BrokerOutbox:
    outbox = BrokerOutbox(store.r, store.keys, broker, grace_s=grace_s, backoff_s=60)
    store.use_broker_outbox(outbox)
    return outbox


def _job_of(message: str) -> str:
    return str(json.loads(decode(message).body)[0][0])


async def _create(store: JobStore, priority: int = INTERACTIVE, max_depth: int | None = None) -> tuple[str, str]:
    job_id, queue = new_id(), f"{store.prefix}.m"
    fields = store.job_fields(
        owner="alice", model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3
    )
    if priority:
        fields["priority"] = str(priority)
    message = task_message(job_id, queue, priority)
    out = await store.create(job_id, fields, ttl_s=60, max_depth=max_depth, message=message)
    assert out.outcome == "created"
    return job_id, message


async def test_lane_depths_count_waiting_jobs_with_rabbitmq(store: JobStore) -> None:
    """RabbitMQ counts a queue's messages, not per lane: the depth limit and the readings use the
    jobs waiting in each lane, kept by the job scripts."""
    _outbox(store, FakeBroker())
    queue = f"{store.prefix}.m"
    first, _ = await _create(store, max_depth=2)
    await _create(store, max_depth=2)
    await _create(store, priority=BATCH, max_depth=2)
    assert (await store.lane_depths([queue]))[queue] == {INTERACTIVE: 2, LOW: 0, BATCH: 1}
    job_id = new_id()
    fields = store.job_fields(owner="a", model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3)
    full = await store.create(job_id, fields, ttl_s=60, max_depth=2, message=task_message(job_id, queue, 0))
    assert full.outcome == "full"
    assert (await store.claim(first, "w1", 30, 3)).outcome == "claimed"
    assert (await store.lane_depths([queue]))[queue][INTERACTIVE] == 1
    await _create(store, max_depth=2)  # room again


async def test_created_job_is_published_and_leaves_the_outbox(store: JobStore) -> None:
    broker = FakeBroker()
    outbox = _outbox(store, broker)
    _, message = await _create(store)
    assert broker.sent == [message] and await outbox.pending() == 0
    assert await store.r.llen(store.keys.lane(f"{store.prefix}.m", 0)) == 0  # nothing in kombu's lists


async def test_message_of_a_failed_publish_stays_and_is_republished(store: JobStore) -> None:
    broker = FakeBroker()
    outbox = _outbox(store, broker)
    broker.down = True
    job_id, message = await _create(store)  # accepted while the broker is down
    rec = await store.get(job_id)
    assert rec is not None and rec.status == "queued"
    assert await outbox.pending() == 1 and broker.sent == []
    assert await outbox.relay_once() == 0  # not yet past its grace: its writer may still publish it
    await asyncio.sleep(0.4)
    assert await outbox.relay_once() == 0 and await outbox.pending() == 1  # still down: kept
    broker.down = False
    await asyncio.sleep(0.4)
    assert await outbox.relay_once() == 1
    assert broker.sent == [message] and await outbox.pending() == 0


async def test_entry_left_by_a_crash_is_republished_once_by_many_relays(store: JobStore) -> None:
    """A writer that died between the script and the publish: the message is in the outbox only."""
    broker = FakeBroker()
    _outbox(store, broker)
    relays = [BrokerOutbox(store.r, store.keys, broker, grace_s=0.3) for _ in range(3)]
    broker.down = True
    await _create(store)
    broker.down = False
    await asyncio.sleep(0.4)
    sent = await asyncio.gather(*(r.relay_once() for r in relays))
    assert sorted(sent) == [0, 0, 1] and len(broker.sent) == 1


async def test_batch_messages_go_through_the_outbox(store: JobStore) -> None:
    broker = FakeBroker()
    outbox = _outbox(store, broker)
    queue = f"{store.prefix}.m"
    jobs = []
    for _ in range(3):
        job_id = new_id()
        fields = store.job_fields(
            owner="alice", model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3
        )
        fields["priority"] = str(BATCH)
        jobs.append((job_id, fields, task_message(job_id, queue, BATCH)))
    out = await store.batches.submit(
        "batch_1", "alice", jobs, {}, ttl_s=60, idem_key=store.keys.batch_idem("alice", None), max_batch_depth=3
    )
    assert out.outcome == "created"
    assert broker.sent == [m for _, _, m in jobs] and await outbox.pending() == 0


async def test_reaper_requeue_goes_through_the_outbox(store: JobStore) -> None:
    broker = FakeBroker()
    _outbox(store, broker)
    job_id, _ = await _create(store, LOW)
    assert (await store.claim(job_id, "w1", lease_s=0.2, max_attempts=3)).outcome == "claimed"
    await asyncio.sleep(0.3)
    assert await LeaseReaper(store, recheck_s=30).sweep() == [job_id]
    requeued = broker.sent[-1]
    assert _job_of(requeued) == job_id and decode(requeued).priority == amqp_priority(LOW)
    assert await store.broker_outbox.pending() == 0  # type: ignore[union-attr]
    assert (await store.claim(job_id, "w2", lease_s=30, max_attempts=3)).attempt == 2


def test_amqp_form_of_a_message() -> None:
    out = decode(task_message("job_x", "p.m", BATCH))
    body: list[Any] = json.loads(out.body)
    assert out.queue == "p.m" and body[0] == ["job_x"] and out.headers["task"] == TASK_NAME
    assert out.correlation_id == out.headers["id"] and out.content_type == "application/json"
    # RabbitMQ serves higher priorities first: interactive > low > batch
    assert amqp_priority(INTERACTIVE) == MAX_PRIORITY > amqp_priority(LOW) > amqp_priority(BATCH) == 0
    assert out.priority == 0
    q = amqp_queue("p.m")
    assert q.durable and q.queue_arguments == {"x-max-priority": MAX_PRIORITY} and q.routing_key == "p.m"


async def _heartbeat(store: JobStore, worker: str, ttl_s: float) -> None:
    await store.workers.heartbeat(worker, {"model": "m"}, ttl_s=ttl_s)


async def test_redelivered_claim_takes_over_when_the_holders_heartbeat_is_gone(store: JobStore) -> None:
    """A lost worker's job is taken over before its lease ends once its heartbeat has expired; the
    old attempt stays fenced (its renew and finish are refused)."""
    job_id, _ = await _create(store)
    await _heartbeat(store, "w1", ttl_s=1)
    assert (await store.claim(job_id, "w1", lease_s=60, max_attempts=3)).attempt == 1
    busy = await store.claim(job_id, "w2", lease_s=60, max_attempts=3)
    assert busy.outcome == "busy" and busy.retry_in <= 1.1  # retry when the heartbeat would lapse, not in 60 s
    await _heartbeat(store, "w1", ttl_s=1)  # still alive: still busy
    assert (await store.claim(job_id, "w2", lease_s=60, max_attempts=3)).outcome == "busy"
    await store.r.hset(store.job_key(job_id), "started_at", "0")  # claimed long ago: it had time to beat
    await store.workers.remove("w1")  # kill -9: no more heartbeats
    second = await store.claim(job_id, "w2", lease_s=60, max_attempts=3)
    assert second.outcome == "claimed" and second.attempt == 2
    assert await store.renew([(job_id, 1)], "w1", 60) == [-1]
    assert await store.finish(job_id, "w1", 1, "succeeded", ttl_s=60) is None
    history = " ".join(await store.history(job_id))
    assert "lost w1" in history and "running w2 attempt 2" in history


async def test_holder_that_just_claimed_is_not_taken_over(store: JobStore) -> None:
    """A holder without a heartbeat that claimed less than a heartbeat's life ago keeps its job."""
    job_id, _ = await _create(store)
    assert (await store.claim(job_id, "w1", lease_s=60, max_attempts=3)).attempt == 1
    busy = await store.claim(job_id, "w2", lease_s=60, max_attempts=3)
    assert busy.outcome == "busy" and 0 < busy.retry_in <= 7.1


async def test_a_queued_job_whose_record_expires_stops_counting(store: JobStore) -> None:
    """A model's workers away past the job TTL: the expired records leave the lane depth (no 503s
    from jobs that no longer exist, no parked batch handed back for them)."""
    _outbox(store, FakeBroker())
    queue = f"{store.prefix}.m"
    job_id = new_id()
    fields = store.job_fields(owner="a", model="m", queue=queue, request=small_request(), deadline_s=10, max_attempts=3)
    assert (await store.create(job_id, fields, ttl_s=1, message=task_message(job_id, queue, 0))).outcome == "created"
    assert (await store.lane_depths([queue]))[queue][INTERACTIVE] == 1
    await asyncio.sleep(2.2)
    assert (await store.claim(job_id, "w1", 30, 3)).outcome == "missing"
    assert (await store.lane_depths([queue]))[queue][INTERACTIVE] == 0
