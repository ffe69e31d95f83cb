"""`rerankd rerank --queue`: a query file run as jobs over two real Celery worker processes
of one model's queue, through the real API and Redis; interrupted (client killed, a worker
killed) and resumed without losing or repeating a query."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import KEYS, REPO, Service

pytestmark = pytest.mark.integration

MODEL = "batch-sleep"


@pytest.fixture(scope="module")
def two_workers(service: Service) -> Service:
    """Two SleepEngine workers (concurrency 1 each) on the ``batch-sleep`` queue."""
    for name in ("batch-a", "batch-b"):
        if name not in service.workers:
            service.start_worker(name, MODEL, SLEEP_ENGINE, concurrency=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        live = [w for w in service.live_workers() if w["model"] == MODEL]
        if len(live) >= 2:
            return service
        time.sleep(0.3)
    raise TimeoutError("the two batch workers did not come up")


def write_queries(path: Path, tag: str, n: int, sleep_s: float) -> list[str]:
    """``n`` queries whose jobs take ``sleep_s`` each on the SleepEngine; returns their qids."""
    qids = []
    with path.open("w") as fh:
        for i in range(n):
            qid = f"{tag}-q{i}"
            cands = [{"docid": f"{qid}-d{j}", "text": f"passage {j} of {qid}"} for j in range(6)]
            query = f"question {i} sleep={sleep_s} please"
            fh.write(json.dumps({"qid": qid, "query": query, "candidates": cands}) + "\n")
            qids.append(qid)
    return qids


def cli(svc: Service, *args: str) -> list[str]:
    return [sys.executable, "-m", "rerankd.cli", "rerank", *args, "--queue", "--api-url", svc.url, "--model", "batch"]


def env_for(svc: Service) -> dict[str, str]:
    return {**svc.env, "RERANKD_API_KEY": KEYS["alice"]}


def run_cli(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cli(svc, *args), cwd=REPO, env=env_for(svc), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def journal_lines(journal: Path) -> list[dict]:  # type: ignore[type-arg]
    if not journal.exists():
        return []
    lines = journal.read_text().splitlines()
    out = []
    for line in lines[1:]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # torn last line
    return out


def jobs_by_qid(svc: Service, qids: list[str]) -> Counter[str]:
    """How many jobs the service holds for each of ``qids`` (read straight from Redis)."""
    r = redis.Redis.from_url(svc.redis_url)
    wanted = set(qids)
    counts: Counter[str] = Counter()
    for key in r.scan_iter(match=f"{svc.prefix}:job:job_*", count=500):
        if key.endswith(b":log"):
            continue
        raw = r.hget(key, "request")
        if raw:
            qid = json.loads(raw)["query"]["qid"]
            if qid in wanted:
                counts[qid] += 1
    return counts


def workers_by_qid(svc: Service, qids: list[str]) -> dict[str, str]:
    r = redis.Redis.from_url(svc.redis_url)
    wanted = set(qids)
    out = {}
    for key in r.scan_iter(match=f"{svc.prefix}:job:job_*", count=500):
        if key.endswith(b":log"):
            continue
        raw = r.hget(key, "request")
        if raw and (qid := json.loads(raw)["query"]["qid"]) in wanted:
            out[qid] = (r.hget(key, "worker") or b"").decode()
    return out


def test_queue_batch_spreads_over_both_workers_in_input_order(two_workers: Service, tmp_path: Path) -> None:
    svc = two_workers
    tag = f"spread{secrets.token_hex(3)}"
    qids = write_queries(tmp_path / "in.jsonl", tag, n=10, sleep_s=0.3)
    out = tmp_path / "run.trec"
    proc = run_cli(svc, str(tmp_path / "in.jsonl"), "-o", str(out), "--concurrency", "3")
    assert "jobs on 2 workers" in proc.stderr, proc.stderr
    # Output in input order, each query a permutation of its candidates.
    lines = [ln.split() for ln in out.read_text().splitlines()]
    seen_order = list(dict.fromkeys(ln[0] for ln in lines))
    assert seen_order == qids
    for qid in qids:
        docs = [ln[2] for ln in lines if ln[0] == qid]
        assert sorted(docs) == sorted(f"{qid}-d{j}" for j in range(6))
    # Both workers ran some of the jobs, and every query ran as exactly one job.
    workers = workers_by_qid(svc, qids)
    assert len(set(workers.values())) == 2, workers
    assert jobs_by_qid(svc, qids) == Counter({q: 1 for q in qids})


def test_queue_batch_resumes_after_client_and_worker_are_killed(two_workers: Service, tmp_path: Path) -> None:
    svc = two_workers
    tag = f"resume{secrets.token_hex(3)}"
    n = 12
    qids = write_queries(tmp_path / "in.jsonl", tag, n=n, sleep_s=0.4)
    out = tmp_path / "run.jsonl"
    journal = out.with_name(out.name + ".journal.jsonl")
    args = cli(svc, str(tmp_path / "in.jsonl"), "-o", str(out), "--format", "jsonl", "--concurrency", "3")

    # 1. Kill the client (SIGKILL) once a few queries are journaled; its jobs in flight keep running.
    client = subprocess.Popen(args, cwd=REPO, env=env_for(svc), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(journal_lines(journal)) < 3 and time.monotonic() < deadline:
        assert client.poll() is None, client.stderr.read().decode() if client.stderr else ""
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    first_part = len(journal_lines(journal))
    assert 3 <= first_part < n

    # 2. Resume, and kill one of the two workers while the resumed run is going.
    resumed = subprocess.Popen(args, cwd=REPO, env=env_for(svc), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while len(journal_lines(journal)) < first_part + 2 and time.monotonic() < deadline:
        assert resumed.poll() is None, resumed.stderr.read().decode() if resumed.stderr else ""
        time.sleep(0.05)
    svc.kill_worker("batch-a")
    try:
        _, err = resumed.communicate(timeout=240)
    finally:
        svc.start_worker("batch-a", MODEL, SLEEP_ENGINE, concurrency=1)  # for later tests
    assert resumed.returncode == 0, err.decode()
    assert "picked up from an earlier run" in err.decode()

    # 3. The same run uninterrupted, to another output path.
    clean = tmp_path / "clean.jsonl"
    run_cli(svc, str(tmp_path / "in.jsonl"), "-o", str(clean), "--format", "jsonl", "--concurrency", "3")

    def rankings(path: Path) -> list[tuple[str, list[str]]]:
        rows = [json.loads(ln) for ln in path.read_text().splitlines()]
        return [(r["qid"], [d["docid"] for d in r["ranking"]]) for r in rows]

    assert rankings(out) == rankings(clean)
    assert [q for q, _ in rankings(out)] == qids
    # Every query journaled once, and the service ran one job per query for the interrupted run
    # (the resumed client picked up the killed client's jobs instead of submitting new ones;
    # the killed worker's job was redelivered by the service, not resubmitted).
    assert sorted(r["index"] for r in journal_lines(journal)) == list(range(n))
    assert jobs_by_qid(svc, qids) == Counter({q: 2 for q in qids})  # interrupted run + clean run
