"""Fair shares on the real service (issue 20): interactive slots that batch jobs never take, and
tenants taking turns within a lane, with a worker whose jobs take seconds (the sleep engine)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import REPO, Service

pytestmark = pytest.mark.integration

# names of their own: other modules' "alice" jobs in flight on the shared service count against "alice"
KEYS = {"alice": "key-fair-alice", "bob": "key-fair-bob"}
NAMES = {"alice": "fair-alice", "bob": "fair-bob"}


@dataclass
class FairApi:
    url: str
    service: Service

    def headers(self, owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[owner]}"}

    def job(self, owner: str, model: str, sleep: float) -> str:
        body = {"model": model, "query": {"text": f"sleep={sleep} now"}, "candidates": [{"docid": "a", "text": "x"}]}
        resp = httpx.post(f"{self.url}/v1/jobs", json=body, headers=self.headers(owner), timeout=30)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def record(self, job_id: str) -> dict[str, str]:
        r = redis.Redis.from_url(self.service.redis_url, decode_responses=True)
        return dict(r.hgetall(f"{self.service.prefix}:job:{job_id}"))


@pytest.fixture(scope="module")
def fair_api(service: Service) -> Iterator[FairApi]:
    aliases = {**json.loads(service.env["RERANKD_ALIASES"])}
    aliases["slots"] = {"model": "slots-model"}
    aliases["turns"] = {"model": "turns-model"}
    env = {
        **service.env,
        "RERANKD_API_KEYS": ",".join(f"{NAMES[o]}:{k}" for o, k in KEYS.items()),
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_QUOTAS": json.dumps({NAMES["alice"]: {"jobs_in_flight": 5}}),
        "RERANKD_MAX_QUEUE_DEPTH": "100",
    }
    stack = LocalStack(env, service.logs / "fair-api", cwd=REPO)
    try:
        stack.start_api(free_port(), log="fair-api.log")
        yield FairApi(stack.url, service)
    finally:
        stack.stop()


def _wait(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_interactive_job_does_not_wait_for_batch_jobs(fair_api: FairApi) -> None:
    url, service = fair_api.url, fair_api.service
    body = {"query": {"text": "sleep=6 now"}, "candidates": [{"docid": "a", "text": "x"}]}
    lines = "\n".join(json.dumps({"custom_id": f"b{i}", "body": body}) for i in range(4))
    batch = httpx.post(f"{url}/v1/batches?model=slots", content=lines, headers=fair_api.headers("alice"), timeout=30)
    assert batch.status_code == 202, batch.text
    r = redis.Redis.from_url(service.redis_url, decode_responses=True)
    items = r.lrange(f"{service.prefix}:batch:{batch.json()['id']}:items", 0, -1)
    # 3 threads, 1 interactive slot (the default): 2 batch jobs run, a third thread keeps its batch message
    service.start_worker("slots", "slots-model", SLEEP_ENGINE, concurrency=3)
    try:
        _wait(lambda: sum(fair_api.record(j).get("status") == "running" for j in items) == 2, timeout=240)
        time.sleep(1.0)  # the third thread has its batch message by now, waiting for a slot
        assert sum(fair_api.record(j).get("status") == "running" for j in items) == 2
        t0 = time.time()
        body = {"model": "slots", "query": "sleep=0.1 now", "documents": ["a", "b"]}
        resp = httpx.post(f"{url}/v2/rerank", json=body, headers=fair_api.headers("bob"), timeout=60)
        took = time.time() - t0
        assert resp.status_code == 200, resp.text
        bob = fair_api.record(resp.json()["id"])
        batch_records = [fair_api.record(j) for j in items]
        first_batch_end = min(float(b.get("finished_at") or 1e12) for b in batch_records)
        # bob's job started while both batch jobs still ran: it did not wait for one to finish
        assert float(bob["started_at"]) < first_batch_end, (bob, batch_records)
        assert took < 5.0, took
        _wait(lambda: all(fair_api.record(j).get("status") == "succeeded" for j in items), timeout=120)
        assert all(fair_api.record(j).get("attempts") == "1" for j in items)
    finally:
        service.kill_worker("slots")


def test_a_tenant_at_its_quota_does_not_go_ahead_of_another(fair_api: FairApi) -> None:
    service = fair_api.service
    service.start_worker("turns", "turns-model", SLEEP_ENGINE, concurrency=1)
    try:
        service.wait_workers(["turns-model"])
        alice = [fair_api.job("alice", "turns", 1.5) for _ in range(5)]  # alice is at her quota (5 in flight)
        _wait(lambda: fair_api.record(alice[0]).get("status") == "running")
        over = httpx.post(
            f"{fair_api.url}/v1/jobs",
            json={"model": "turns", "query": {"text": "q"}, "candidates": [{"docid": "a", "text": "x"}]},
            headers=fair_api.headers("alice"),
            timeout=30,
        )
        assert over.status_code == 429, over.text
        waiting = [j for j in alice if fair_api.record(j).get("status") == "queued"]
        assert len(waiting) >= 3
        body = {"model": "turns", "query": "sleep=0.1 now", "documents": ["a", "b"]}
        resp = httpx.post(f"{fair_api.url}/v2/rerank", json=body, headers=fair_api.headers("bob"), timeout=60)
        assert resp.status_code == 200, resp.text  # bob's sync rerank
        bob_start = float(fair_api.record(resp.json()["id"])["started_at"])
        starts = [float(fair_api.record(j).get("started_at") or 1e12) for j in waiting]
        # bob's job ran before every job alice still had queued when bob sent his
        assert bob_start < min(starts), (bob_start, starts)
        _wait(lambda: all(fair_api.record(j).get("status") == "succeeded" for j in alice), timeout=60)
    finally:
        service.kill_worker("turns")


def test_batch_order_survives_handed_back_messages(fair_api: FairApi) -> None:
    """A parked batch message goes back to the consuming end: the batch still runs in its order."""
    service = fair_api.service
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"o{i}",
                "body": {"query": {"text": "sleep=0.3 now"}, "candidates": [{"docid": "a", "text": "x"}]},
            }
        )
        for i in range(6)
    )
    batch = httpx.post(
        f"{fair_api.url}/v1/batches?model=slots", content=lines, headers=fair_api.headers("bob"), timeout=30
    )
    assert batch.status_code == 202, batch.text
    r = redis.Redis.from_url(service.redis_url, decode_responses=True)
    items = r.lrange(f"{service.prefix}:batch:{batch.json()['id']}:items", 0, -1)
    service.start_worker("slots2", "slots-model", SLEEP_ENGINE, concurrency=2)
    stop = threading.Event()

    def interactive_noise() -> None:  # interactive jobs keep arriving: parked batch messages go back
        while not stop.is_set():
            body = {"model": "slots", "query": "sleep=0.05 now", "documents": ["a"]}
            httpx.post(f"{fair_api.url}/v2/rerank", json=body, headers=fair_api.headers("bob"), timeout=60)

    noise = threading.Thread(target=interactive_noise)
    noise.start()
    try:
        _wait(lambda: all(fair_api.record(j).get("status") == "succeeded" for j in items), timeout=240)
    finally:
        stop.set()
        noise.join(60)
        service.kill_worker("slots2")
    starts = [float(fair_api.record(j)["started_at"]) for j in items]
    assert starts == sorted(starts)
    assert all(fair_api.record(j).get("attempts") == "1" for j in items)
