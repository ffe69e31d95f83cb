"""Workers by role on one model: a scoring worker (an engine without ``generate``) and a generating
worker (the hf engine with ``RERANKD_WORKER_ROLE=generating``), real Redis, real Celery worker
processes, the real API and the tiny random model.  Sliding-window jobs all run on the generating
worker (they wait while only the scoring worker is up), ICR jobs on the scoring one, FIRST jobs on
either; a role the engine cannot serve stops the worker at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rerankd.jobs import JobStore
from rerankd.jobs.redact import worker_ref
from rerankd.jobs.routing import model_queues, queue_name
from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from tests.support.engines import SCORING_ENGINE
from tests.support.stack import KEYS, REPO

pytestmark = pytest.mark.integration

HEADERS = {"Authorization": f"Bearer {KEYS['alice']}"}


@dataclass
class Roles:
    stack: LocalStack
    model: str
    prefix: str

    def worker_id(self, name: str) -> str:
        """The opaque id job records show for worker ``name``."""
        return worker_ref(f"{socket.gethostname()}:{self.stack.workers[name].pid}") or ""

    def start(self, name: str, engine: str, role: str = "auto") -> None:
        self.stack.start_worker(name, self.model, engine, concurrency=2, extra_env={"RERANKD_WORKER_ROLE": role})

    def wait_for(self, name: str) -> dict[str, Any]:
        """Wait until worker ``name`` heartbeats; its ``/healthz`` entry."""
        wid, deadline = self.worker_id(name), time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.stack.workers[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited; see {self.stack.logs}")
            for w in self.stack.live_workers(HEADERS):
                if w["id"] == wid:
                    return dict(w)
            time.sleep(0.3)
        raise TimeoutError(f"worker {name} did not come up; see {self.stack.logs}")

    def submit(self, strategy: dict[str, Any], i: int) -> str:
        cands = [{"docid": f"d{j}", "text": f"passage {j} about topic {i}"} for j in range(6)]
        body = {"query": {"text": f"topic {i}"}, "candidates": cands, "strategy": strategy}
        resp = httpx.post(f"{self.stack.url}/v1/jobs", json=body, headers=HEADERS, timeout=30)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def wait_job(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = httpx.get(f"{self.stack.url}/v1/jobs/{job_id}?include=history", headers=HEADERS, timeout=30).json()
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                return dict(job)
            time.sleep(0.2)


@pytest.fixture(scope="module")
def roles(test_redis: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    """The API and, at first, only the scoring worker of the tiny model (tests add the other)."""
    logs = tmp_path_factory.mktemp("routing-logs")
    prefix = f"rt{secrets.token_hex(3)}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": test_redis,
        "RERANKD_KEY_PREFIX": prefix,
        "RERANKD_MODEL": str(tiny_model_dir),
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in KEYS.items()),
        "RERANKD_LEASE_S": "2",
        "RERANKD_REAPER_INTERVAL_S": "1",
        "RERANKD_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    stack = LocalStack(env, logs, cwd=REPO)
    try:
        stack.start_api(free_port())
        r = Roles(stack, str(tiny_model_dir), prefix)
        r.start("scoring", SCORING_ENGINE)
        r.wait_for("scoring")
        yield r
    finally:
        stack.stop()


SLIDING = {"name": "sliding_window", "window_size": 4, "stride": 2}
ICR = {"name": "icr"}
FIRST = {"name": "first", "window_size": 4, "stride": 2}


def test_jobs_reach_only_workers_that_can_serve_their_strategy(roles: Roles) -> None:
    gen_q, logp_q, att_q, _score_q = model_queues(roles.prefix, roles.model)
    scoring = roles.wait_for("scoring")
    assert scoring["queues"] == [logp_q, att_q] and scoring["strategies"] == ["first", "icr"]
    health = httpx.get(f"{roles.stack.url}/healthz", headers=HEADERS, timeout=10).json()
    # no generating worker yet, and no cross-encoder worker at all (pointwise needs the score capability)
    assert health["unserved_strategies"] == {roles.model: ["sliding_window", "full_ranking", "pointwise"]}

    # Only the scoring worker is up: sliding-window work waits in the generation queue (a sync
    # call gets 503 when its wait ends), ICR runs at once.
    sync = httpx.post(
        f"{roles.stack.url}/v1/rerank",
        json={"query": "topic", "documents": ["a", "b", "c"]},
        headers={**HEADERS, "Prefer": "wait=3"},
        timeout=30,
    )
    assert sync.status_code == 503 and gen_q in sync.json()["message"], sync.text
    sliding = [roles.submit(SLIDING, i) for i in range(4)]
    icr_early = roles.submit(ICR, 0)
    assert roles.wait_job(icr_early)["worker"] == roles.worker_id("scoring")
    queues = httpx.get(f"{roles.stack.url}/v1/queues", headers=HEADERS, timeout=10).json()
    (row,) = [q for q in queues["queues"] if q["model"] == roles.model]
    by_queue = {q["queue"]: q for q in row["queues"]}
    assert by_queue[gen_q]["depth"]["interactive"] >= 4 and by_queue[gen_q]["workers"] == 0
    assert by_queue[att_q]["workers"] == by_queue[logp_q]["workers"] == 1
    assert row["depth"]["interactive"] == sum(q["depth"]["interactive"] for q in row["queues"])
    assert all(roles.wait_job(j, timeout=0)["status"] == "queued" for j in sliding)

    roles.start("generating", "hf", role="generating")
    generating = roles.wait_for("generating")
    assert generating["queues"] == [gen_q, logp_q] and generating["strategies"] == [
        "sliding_window",
        "full_ranking",
        "first",
    ]
    sliding += [roles.submit(SLIDING, i) for i in range(4, 6)]
    icr = [icr_early, *(roles.submit(ICR, i) for i in range(1, 4))]
    first = [roles.submit(FIRST, i) for i in range(3)]

    ids = {"scoring": roles.worker_id("scoring"), "generating": roles.worker_id("generating")}
    ran_on: dict[str, set[str]] = {}
    for name, jobs in (("sliding_window", sliding), ("icr", icr), ("first", first)):
        for job_id in jobs:
            job = roles.wait_job(job_id)
            assert job["status"] == "succeeded", job
            assert sorted(r["docid"] for r in job["result"]["ranking"]) == [f"d{j}" for j in range(6)]
            # every attempt's claim, not only the last: no job was ever handed to the wrong role
            claims = {w for line in job["history"] for w in ids.values() if w in line}
            assert claims == {job["worker"]}, job["history"]
            ran_on.setdefault(name, set()).add(job["worker"])
    assert ran_on["sliding_window"] == {ids["generating"]}  # never the scoring worker
    assert ran_on["icr"] == {ids["scoring"]}
    assert ran_on["first"] <= {ids["scoring"], ids["generating"]}
    health = httpx.get(f"{roles.stack.url}/healthz", headers=HEADERS, timeout=10).json()
    assert health["unserved_strategies"] == {roles.model: ["pointwise"]}  # an LLM serves every LLM strategy
    assert set(model_queues(roles.prefix, roles.model)) <= set(health["queues"])
    metrics = httpx.get(f"{roles.stack.url}/metrics", headers=HEADERS, timeout=10).text  # a tenant sees queues
    for q in (gen_q, logp_q, att_q):
        assert f'rerankd_queue_depth{{lane="interactive",queue="{q}"}}' in metrics
    assert queue_name(roles.prefix, roles.model) == gen_q


def test_a_role_the_engine_cannot_serve_stops_the_worker_at_start_up(roles: Roles) -> None:
    roles.start("wrong-role", SCORING_ENGINE, role="generating")
    proc = roles.stack.workers["wrong-role"]
    assert proc.wait(240) != 0
    log = (roles.stack.logs / "worker-wrong-role.log").read_text()
    assert "RERANKD_WORKER_ROLE='generating' needs the generate capability" in log, log[-3000:]


def test_batches_route_each_line_by_its_strategy(roles: Roles) -> None:
    if "generating" not in roles.stack.workers:
        roles.start("generating", "hf", role="generating")
    roles.wait_for("generating")
    lines = []
    for i, strategy in enumerate([SLIDING, ICR, SLIDING, ICR]):
        cands = [{"docid": f"d{j}", "text": f"passage {j}"} for j in range(4)]
        body = {"query": {"text": f"q{i}"}, "candidates": cands, "strategy": strategy}
        lines.append(json.dumps({"custom_id": f"c{i}", "body": body}))
    resp = httpx.post(f"{roles.stack.url}/v1/batches", content="\n".join(lines), headers=HEADERS, timeout=30)
    assert resp.status_code == 202, resp.text
    batch_id = resp.json()["id"]
    deadline = time.monotonic() + 240
    status: dict[str, Any] = {}
    while status.get("status") != "completed" and time.monotonic() < deadline:
        status = httpx.get(f"{roles.stack.url}/v1/batches/{batch_id}", headers=HEADERS, timeout=10).json()
        time.sleep(0.3)
    assert status["counts"]["succeeded"] == 4, status
    ids = asyncio.run(_batch_items(roles, batch_id))
    workers = [roles.wait_job(j, timeout=0)["worker"] for j in ids]
    gen, sc = roles.worker_id("generating"), roles.worker_id("scoring")
    assert workers == [gen, sc, gen, sc]  # input order: sliding, icr, sliding, icr


async def _batch_items(roles: Roles, batch_id: str) -> list[str]:
    store = JobStore.from_url(roles.stack.env["RERANKD_REDIS_URL"], roles.prefix)
    try:
        return await store.batches.item_ids(batch_id, 0, 100)
    finally:
        await store.aclose()
