"""Per-key quotas, status counters, lanes and atomic batches against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from rerankd.api.metrics import render
from rerankd.config import QuotaOverride, Settings
from rerankd.jobs import JobStore, body_hash, new_id
from rerankd.jobs.quotas import BATCH, LOW, Quota, cohere_lane, lane_key
from tests.support.jobs import small_request, small_result

pytestmark = pytest.mark.anyio


def _quota(owner: str = "alice", docs: int = 3, **limits: int) -> Quota:
    base = {"jobs_in_flight": 0, "batch_jobs_in_flight": 0, "requests_per_minute": 0, "documents_per_minute": 0}
    return Quota(owner, QuotaOverride(**{**base, **limits}), docs)


async def _create(store: JobStore, quota: Quota | None = None, owner: str = "alice", priority: int = 0) -> str:
    fields = store.job_fields(
        owner=owner,
        model="m",
        queue=f"{store.prefix}.m",
        request=small_request(),
        deadline_s=10,
        max_attempts=3,
        priority=priority,
    )
    m = store.metrics()
    m.inc("jobs_submitted_total", {"kind": "job"})
    quota = dataclasses.replace(quota, owner=owner) if quota is not None else None
    out = await store.create(new_id(), fields, ttl_s=60, quota=quota, metrics=m, message="msg")
    return out.job_id if out.outcome == "created" else f"{out.outcome}:{out.limit}:{out.retry_after_s}"


async def _gauges(store: JobStore) -> dict[str, dict[str, float]]:
    out = await store.read_metric_hashes(["g:jobs_by_status"])
    return {**out, "q:inflight": {k: float(v) for k, v in (await store.in_flight()).items()}}


async def test_jobs_in_flight_follow_every_transition(store: JobStore) -> None:
    q = _quota(jobs_in_flight=2)
    a, b = await _create(store, q), await _create(store, q)
    assert (await _create(store, q)).startswith("quota:jobs_in_flight:None")
    assert not (await _create(store, q, owner="bob")).startswith("quota")  # other keys are not affected
    g = await _gauges(store)
    assert g["q:inflight"] == {"alice": 2, "bob": 1}
    assert g["g:jobs_by_status"] == {'{"model":"m","status":"queued"}': 3}
    assert (await store.claim(a, "w", 30, 3)).outcome == "claimed"
    g = await _gauges(store)
    assert g["g:jobs_by_status"] == {'{"model":"m","status":"queued"}': 2, '{"model":"m","status":"running"}': 1}
    assert g["q:inflight"]["alice"] == 2
    await store.finish(a, "w", 1, "succeeded", ttl_s=60, result=small_result())
    assert (await _gauges(store))["q:inflight"]["alice"] == 1
    c = await _create(store, q)
    assert not c.startswith("quota")
    assert (await store.cancel(b, "alice"))[0] == "cancelled"
    assert await store.expire_if_queued(c)
    g = await _gauges(store)
    assert g["q:inflight"]["alice"] == 0
    assert g["g:jobs_by_status"] == {'{"model":"m","status":"queued"}': 1, '{"model":"m","status":"running"}': 0}
    text = (await render(store, [f"{store.prefix}.m"])).decode()
    assert 'rerankd_jobs_by_status{model="m",status="queued"} 1.0' in text
    assert 'rerankd_jobs_in_flight{key="bob",kind="interactive"} 1.0' in text
    assert f'rerankd_queue_depth{{lane="interactive",queue="{store.prefix}.m"}} 4.0' in text


async def test_rate_quotas_have_an_accurate_retry_after(store: JobStore) -> None:
    q = _quota(requests_per_minute=2)
    await _create(store, q), await _create(store, q)
    outcome, limit, retry = (await _create(store, q)).split(":")
    assert (outcome, limit) == ("quota", "requests_per_minute") and 0 < float(retry) <= 60
    d = _quota(docs=3, documents_per_minute=5)
    assert not (await _create(store, d, owner="carol")).startswith("quota")
    assert (await _create(store, d, owner="carol")).startswith("quota:documents_per_minute")
    msg = q.message("requests_per_minute", 2, float(retry))
    assert "requests_per_minute is 2 (RERANKD_QUOTA_REQUESTS_PER_MINUTE or RERANKD_QUOTAS['alice']" in msg
    assert _quota(docs=10, documents_per_minute=5).precheck() is not None


def test_settings_overrides_and_lanes() -> None:
    s = Settings(quotas={"alice": {"jobs_in_flight": 7}})  # type: ignore[dict-item]
    assert s.quota_for("alice").jobs_in_flight == 7
    assert s.quota_for("bob").jobs_in_flight == s.quota_jobs_in_flight
    assert cohere_lane(None) == cohere_lane(0) == 0 and cohere_lane(5) == LOW
    with pytest.raises(ValueError, match="priority must be between 0 and 999"):
        cohere_lane(1000)
    assert lane_key("q", 0) == "q" and lane_key("q", BATCH) == "q\x06\x169"


async def test_low_priority_jobs_go_to_their_lane(store: JobStore) -> None:
    job = await _create(store, priority=LOW)
    assert await store.r.lrange(lane_key(f"{store.prefix}.m", LOW), 0, -1) == [b"msg"]
    assert (await store.get(job)) is not None


async def test_batch_submit_is_atomic_and_idempotent(store: JobStore) -> None:
    queue = f"{store.prefix}.m"
    idem = store.idem_key("alice", "batch:k1")

    def jobs(n: int) -> list[tuple[str, dict[str, str], str]]:
        out = []
        for i in range(n):
            jid = new_id()
            fields = store.job_fields(
                owner="alice",
                model="m",
                queue=queue,
                request=small_request(),
                deadline_s=10,
                max_attempts=3,
                kind="batch",
                batch_id="batch_1",
                custom_id=f"c{i}",
                priority=BATCH,
            )
            out.append((jid, fields, f"msg{i}"))
        return out

    first = jobs(3)
    h = body_hash({"lines": 3})
    out = await store.batches.submit(
        "batch_1", "alice", first, {"x": "1"}, ttl_s=60, idem_key=idem, idempotency=("k1", h), max_batch_depth=3
    )
    assert (out.outcome, out.job_id) == ("created", "batch_1")
    assert await store.r.lrange(lane_key(queue, BATCH), 0, -1) == [b"msg2", b"msg1", b"msg0"]
    assert await store.r.llen(queue) == 0
    again = await store.batches.submit("batch_2", "alice", jobs(3), {}, ttl_s=60, idem_key=idem, idempotency=("k1", h))
    assert (again.outcome, again.job_id) == ("existing", "batch_1")
    other = await store.batches.submit(
        "batch_3", "alice", jobs(3), {}, ttl_s=60, idem_key=idem, idempotency=("k1", body_hash({}))
    )
    assert (other.outcome, other.job_id) == ("conflict", "batch_1")
    full = await store.batches.submit("batch_4", "alice", jobs(1), {}, ttl_s=60, idem_key=idem, max_batch_depth=3)
    assert full.outcome == "full" and full.job_id == lane_key(queue, BATCH)
    quota = Quota("alice", QuotaOverride(batch_jobs_in_flight=4, requests_per_minute=0), 0, jobs=2, batch=True)
    over = await store.batches.submit("batch_5", "alice", jobs(2), {}, ttl_s=60, idem_key=idem, quota=quota)
    assert (over.outcome, over.limit, over.current) == ("quota", "jobs_in_flight", 3)
    assert await store.batches.info("batch_4") is None and await store.batches.info("batch_5") is None
    assert await store.r.llen(lane_key(queue, BATCH)) == 3  # nothing of the refused batches
    info = await store.batches.info("batch_1")
    assert info is not None and info["owner"] == "alice" and info["total"] == "3" and info["x"] == "1"
    assert store.batches.counts(info)["queued"] == 3
    ids = await store.batches.item_ids("batch_1", 1, 5)
    assert ids == [first[1][0], first[2][0]]
    assert (await store.claim(ids[0], "w", 30, 3)).outcome == "claimed"
    await store.finish(ids[0], "w", 1, "succeeded", ttl_s=60, result=small_result())
    await store.cancel(ids[1], "alice")
    info = await store.batches.info("batch_1")
    assert info is not None
    counts = store.batches.counts(info)
    assert (counts["queued"], counts["running"], counts["succeeded"], counts["cancelled"]) == (1, 0, 1, 1)
    assert (await _gauges(store))["q:inflight"] == {"alice|batch": 1}


async def test_a_record_that_expires_unfinished_stops_counting(store: JobStore) -> None:
    q = _quota(jobs_in_flight=1)
    fields = store.job_fields(
        owner="alice", model="m", queue=f"{store.prefix}.m", request=small_request(), deadline_s=10, max_attempts=3
    )
    assert (await store.create(new_id(), fields, ttl_s=1, quota=q)).outcome == "created"
    assert (await store.create(new_id(), fields, ttl_s=1, quota=q)).outcome == "quota"
    await asyncio.sleep(1.5)  # past the record's TTL: nobody will ever finish it
    assert await store.in_flight() == {"alice": 0}
    assert (await store.create(new_id(), fields, ttl_s=60, quota=q)).outcome == "created"


async def test_metrics_never_scan_the_keyspace(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await _create(store, _quota(jobs_in_flight=5))

    def no_scan(*_: object, **__: object) -> None:
        raise AssertionError("/metrics must not SCAN")

    monkeypatch.setattr(store.r, "scan_iter", no_scan)
    monkeypatch.setattr(store.r, "scan", no_scan)
    monkeypatch.setattr(store.r, "keys", no_scan)
    text = (await render(store, [f"{store.prefix}.m"])).decode()
    assert 'rerankd_jobs_submitted_total{kind="job"} 1.0' in text
    assert 'rerankd_jobs_in_flight{key="alice",kind="interactive"} 1.0' in text
