"""RabbitMQ as the broker (``RERANKD_BROKER_URL=amqp://``), the job store in Redis: the real API,
real worker processes (:class:`~tests.support.engines.SleepEngine`: ``sleep=N`` in the query sets a
job's length), a real RabbitMQ (:mod:`tests.support.rabbitmq`: a vhost of its own per test; the
broker-restart test starts a private node it may restart) and a real Redis.

* jobs, a sync rerank and a batch run end to end; nothing stays in the broker outbox;
* lanes keep their order on one priority queue: interactive, then low, then batch;
* ``kill -9`` of a worker mid-job: RabbitMQ requeues its message at once and another worker takes
  the job over as soon as the dead worker's heartbeat is gone (before its 30 s lease ends);
* a broker restart keeps the queued jobs (durable queues, persistent messages), and jobs accepted
  while it is down wait in the outbox and run afterwards;
* fencing: a worker paused past its lease loses the job; resumed, its outcome is discarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from tests.support.engines import SLEEP_ENGINE
from tests.support.rabbitmq import PrivateNode, Rabbit, private_node_available, rabbit_for_tests
from tests.support.stack import KEYS, REPO

pytestmark = pytest.mark.integration

MODEL = "amqp-slow"
FINAL = {"succeeded", "failed", "cancelled", "expired"}
RESUME_WITHIN_S = 10.0
"""The promise of docs/guarantees.md for RabbitMQ: a killed worker's job resumes within 10 s."""


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    with rabbit_for_tests(tmp_path_factory.mktemp("rabbitmq"), "the broker tests") as server:
        yield server


@dataclass
class AmqpService:
    """An API and workers on one vhost; the job store under a prefix of its own."""

    stack: LocalStack
    r: redis.Redis
    prefix: str
    broker_url: str

    @property
    def url(self) -> str:
        return self.stack.url

    def headers(self, owner: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[owner]}"}

    def worker(self, name: str, concurrency: int = 1, **env: str) -> int:
        proc = self.stack.start_worker(name, MODEL, SLEEP_ENGINE, concurrency, extra_env=env)
        self.stack.wait_workers([MODEL], pids=[proc.pid], headers=self.headers())
        return proc.pid

    def submit(self, sleep: float, priority: int | None = None) -> str:
        body: dict[str, Any] = {
            "model": MODEL,
            "query": {"text": f"sleep={sleep} s"},
            "candidates": [{"docid": "a", "text": "x"}],
        }
        resp = httpx.post(f"{self.url}/v1/jobs", json=body, headers=self.headers(), timeout=30)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def record(self, job_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(f"{self.prefix}:job:{job_id}").items()}

    def history(self, job_id: str) -> list[list[str]]:
        return [line.decode().split(" ") for line in self.r.lrange(f"{self.prefix}:job:{job_id}:log", 0, -1)]

    def wait(self, job_id: str, until: set[str] = FINAL, timeout: float = 120.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            rec = self.record(job_id)
            if rec.get("status") in until or time.monotonic() > deadline:
                return rec
            time.sleep(0.1)

    def outbox(self) -> int:
        return int(self.r.zcard(f"{self.prefix}:broker:outbox"))


def _env(redis_url: str, broker_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": redis_url,
        "RERANKD_BROKER_URL": broker_url,
        "RERANKD_KEY_PREFIX": prefix,
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in KEYS.items()),
        "RERANKD_MODEL": MODEL,
        "RERANKD_ALIASES": json.dumps({"slow": {"model": MODEL}}),
        "RERANKD_SYNC_TIMEOUT_S": "120",
        "RERANKD_LOG_LEVEL": "INFO",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


@contextlib.contextmanager
def _service(redis_url: str, broker_url: str, logs: Path, **extra: str) -> Iterator[AmqpService]:
    prefix = f"amqp{secrets.token_hex(3)}"
    stack = LocalStack(_env(redis_url, broker_url, prefix, **extra), logs, cwd=REPO)
    r = redis.Redis.from_url(redis_url)
    try:
        stack.start_api(free_port())
        yield AmqpService(stack, r, prefix, broker_url)
    finally:
        stack.stop()
        keys = list(r.scan_iter(match=f"{prefix}*"))
        if keys:
            r.delete(*keys)
        r.close()


@pytest.fixture
def svc(rabbit: Rabbit, test_redis: str, tmp_path: Path) -> Iterator[AmqpService]:
    with rabbit.vhost() as url, _service(test_redis, url, tmp_path / "logs") as service:
        yield service


def _sync_rerank(svc: AmqpService, sleep: float, priority: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "query": f"sleep={sleep} s", "documents": ["x", "y"]}
    if priority is not None:
        body["priority"] = priority
    return httpx.post(f"{svc.url}/v1/rerank", json=body, headers=svc.headers(), timeout=120)


def _batch(svc: AmqpService, n: int, sleep: float) -> str:
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "body": {"query": {"text": f"sleep={sleep} s"}, "candidates": [{"docid": "a", "text": "x"}]},
            }
        )
        for i in range(n)
    )
    resp = httpx.post(f"{svc.url}/v1/batches?model=slow", content=lines, headers=svc.headers(), timeout=30)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _batch_jobs(svc: AmqpService, batch_id: str) -> list[str]:
    return [j.decode() for j in svc.r.lrange(f"{svc.prefix}:batch:{batch_id}:items", 0, -1)]


def test_jobs_run_end_to_end(svc: AmqpService, rabbit: Rabbit) -> None:
    svc.worker("w1", concurrency=2)
    jobs = [svc.submit(0.1) for _ in range(3)]
    sync = _sync_rerank(svc, 0.1)
    assert sync.status_code == 200, sync.text
    batch = _batch_jobs(svc, _batch(svc, 3, 0.1))
    for job_id in [*jobs, *batch]:
        rec = svc.wait(job_id)
        assert rec["status"] == "succeeded" and rec["attempts"] == "1", rec
    assert svc.outbox() == 0  # every message was confirmed by RabbitMQ and removed
    # the queue is RabbitMQ's (durable, with priorities), not a Redis list
    assert svc.r.llen(f"{svc.prefix}.{MODEL}") == 0
    assert rabbit.queue_depths(svc.broker_url).get(f"{svc.prefix}.{MODEL}") == 0


def test_lanes_keep_their_order(svc: AmqpService) -> None:
    svc.worker("lanes", concurrency=1)
    busy = svc.submit(5.0)
    svc.wait(busy, until={"running"})
    batch = _batch_jobs(svc, _batch(svc, 3, 0.1))
    low: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: low.update(_sync_rerank(svc, 0.1, priority=7).json()))
    caller.start()
    deadline = time.monotonic() + 30
    while svc.r.zcard(f"{svc.prefix}:q:inflight:alice") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the low-lane job is created (busy + low; batch jobs count apart)
    interactive = svc.submit(0.1)
    assert svc.record(busy)["status"] == "running"  # all three lanes queued behind the busy job
    caller.join(120)
    ids = [interactive, low["id"], *batch]
    started = {j: float(svc.wait(j)["started_at"]) for j in ids}
    assert all(svc.record(j)["status"] == "succeeded" for j in ids)
    assert started[interactive] < started[low["id"]] < min(started[b] for b in batch), started


def test_killed_worker_job_resumes_within_seconds(svc: AmqpService) -> None:
    """Default lease (30 s): the takeover comes from RabbitMQ's requeue plus the heartbeat check."""
    first = svc.worker("first", concurrency=1)
    job_id = svc.submit(6.0)
    rec = svc.wait(job_id, until={"running"})
    assert rec["worker"].endswith(f":{first}")
    svc.worker("second", concurrency=1)
    os.kill(first, signal.SIGKILL)
    killed_at = time.time()
    rec = svc.wait(job_id, timeout=60)
    assert rec["status"] == "succeeded" and rec["attempts"] == "2", rec
    history = svc.history(job_id)
    resumed = [float(h[0]) for h in history if h[1] == "running" and h[-1] == "2"]
    assert [h[1] for h in history].count("succeeded") == 1, history
    assert resumed and resumed[0] - killed_at < RESUME_WITHIN_S, (resumed, killed_at, history)


def test_paused_worker_outcome_is_refused(rabbit: Rabbit, test_redis: str, tmp_path: Path) -> None:
    """SIGSTOP past the lease: another worker claims the job (the reaper's message, through the
    outbox); SIGCONT: the paused attempt's outcome is discarded, the job succeeds once."""
    with (
        rabbit.vhost() as url,
        _service(test_redis, url, tmp_path / "logs", RERANKD_LEASE_S="3", RERANKD_REAPER_INTERVAL_S="1") as svc,
    ):
        paused = svc.worker("paused", concurrency=1)
        job_id = svc.submit(6.0)
        assert svc.wait(job_id, until={"running"})["worker"].endswith(f":{paused}")
        other = svc.worker("other", concurrency=1)
        os.kill(paused, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while not svc.record(job_id).get("worker", "").endswith(f":{other}") and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.kill(paused, signal.SIGCONT)
        rec = svc.wait(job_id, timeout=60)
        assert rec["status"] == "succeeded" and rec["worker"].endswith(f":{other}") and rec["attempts"] == "2", rec
        time.sleep(2.0)  # the resumed worker's late outcome, if any, would land now
        history = svc.history(job_id)
        assert [h[1] for h in history].count("succeeded") == 1, history
        assert svc.record(job_id)["status"] == "succeeded"


@pytest.mark.skipif(not private_node_available(), reason="needs the rabbitmq-server package (make setup)")
def test_broker_restart_keeps_queued_jobs(test_redis: str, tmp_path: Path) -> None:
    node = PrivateNode(tmp_path / "node")
    node.start()
    try:
        rabbit = node.rabbit()
        with _service(test_redis, rabbit.url("/"), tmp_path / "logs") as svc:
            queued = [svc.submit(0.1) for _ in range(3)]
            assert svc.outbox() == 0
            assert rabbit.queue_depths(svc.broker_url)[f"{svc.prefix}.{MODEL}"] == 3
            node.stop()
            during = svc.submit(0.1)  # accepted while the broker is down: its message waits in the outbox
            assert svc.outbox() == 1
            node.start()
            assert rabbit.queue_depths(svc.broker_url)[f"{svc.prefix}.{MODEL}"] >= 3  # kept on disk
            svc.worker("after", concurrency=2)
            for job_id in [*queued, during]:
                rec = svc.wait(job_id, timeout=90)
                assert rec["status"] == "succeeded" and rec["attempts"] == "1", rec
            assert svc.outbox() == 0
    finally:
        node.stop()


def test_interactive_slot_and_depths_from_waiting_counts(svc: AmqpService) -> None:
    """A batch never holds a worker's last slot on RabbitMQ either: the parked batch message goes back
    through the outbox when an interactive job waits (read from the waiting counts in Redis)."""
    svc.worker("slots", concurrency=3)  # 1 interactive slot (the default): 2 batch jobs at once
    batch = _batch_jobs(svc, _batch(svc, 4, 6.0))
    deadline = time.monotonic() + 60
    while sum(svc.record(j).get("status") == "running" for j in batch) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)  # the third thread holds a batch message, waiting for a slot
    queues = httpx.get(f"{svc.url}/v1/queues", headers=svc.headers(), timeout=30).json()
    rows = [q for m in queues["queues"] for q in m["queues"] if q["queue"] == f"{svc.prefix}.{MODEL}"]
    assert rows and rows[0]["depth"] == {"interactive": 0, "low": 0, "batch": 2}, queues  # waiting counts
    assert sum(svc.record(j).get("status") == "running" for j in batch) == 2
    sync = _sync_rerank(svc, 0.1)
    assert sync.status_code == 200, sync.text
    started = float(svc.record(sync.json()["id"])["started_at"])
    first_batch_end = min(float(svc.record(j).get("finished_at") or 1e12) for j in batch)
    assert started < first_batch_end  # it did not wait for a batch job to finish
    for job_id in batch:
        rec = svc.wait(job_id)
        assert rec["status"] == "succeeded" and rec["attempts"] == "1", rec
