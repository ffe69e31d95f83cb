"""QueueExecutor against a scripted HTTP transport: keys, retries, resubmits, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from rerankd.client import AsyncClient, RerankdError
from rerankd.runs.queue_executor import QueueExecutor, QueueJobError
from rerankd.types import Candidate, Query, RerankRequest


def request(qid: str) -> RerankRequest:
    cands = [Candidate(docid=f"{qid}-d{j}", text=f"text {j}") for j in range(3)]
    return RerankRequest(query=Query(qid=qid, text=f"query {qid}"), candidates=cands)


def result(req: dict[str, Any]) -> dict[str, Any]:
    docs = [c["docid"] for c in req["candidates"]][::-1]
    return {
        "qid": req["query"]["qid"],
        "ranking": [
            {"docid": d, "rank": i + 1, "score": float(-i), "first_stage_rank": len(docs) - i}
            for i, d in enumerate(docs)
        ],
        "strategy": "sliding_window",
        "model": "m",
    }


class FakeService:
    """Jobs keyed by Idempotency-Key; ``script`` maps a key suffix to the job's final state."""

    def __init__(
        self, fail_keys: dict[str, tuple[str, str]] | None = None, busy_posts: int = 0, expired: str = ""
    ) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.fail_keys = fail_keys or {}
        self.busy_posts = busy_posts
        self.expired = expired  # keys ending so answer like a key whose job expired
        self.posts: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            key = req.headers["Idempotency-Key"]
            self.posts.append(key)
            if self.expired and key.endswith(self.expired):
                body = {"message": "job job_x of this Idempotency-Key has expired", "code": "idempotency_key_expired"}
                return httpx.Response(404, json=body)
            if req.url.params.get("model") == "nope" or json.loads(req.content).get("model") == "nope":
                return httpx.Response(404, json={"message": "unknown model 'nope'; known: tiny"})
            if self.busy_posts:
                self.busy_posts -= 1
                return httpx.Response(503, json={"message": "queue full"}, headers={"Retry-After": "0.01"})
            if key in self.by_key:
                return httpx.Response(202, json=self.jobs[self.by_key[key]], headers={"Idempotent-Replayed": "true"})
            body = json.loads(req.content)
            job_id = f"job_{len(self.jobs)}"
            self.by_key[key] = job_id
            failure = next((v for k, v in self.fail_keys.items() if key.endswith(k)), None)
            job: dict[str, Any] = {"id": job_id, "status": "queued", "worker": None, "_body": body, "_fail": failure}
            self.jobs[job_id] = job
            return httpx.Response(202, json=self._public(job))
        job = self.jobs[req.url.path.rsplit("/", 1)[1]]
        if job["status"] == "queued":
            if job["_fail"]:
                job["status"] = "failed"
                job["error"] = {"code": job["_fail"][0], "message": job["_fail"][1]}
            else:
                job["status"] = "succeeded"
                job["worker"] = f"w{int(job['id'].split('_')[1]) % 2}"
                job["result"] = result(job["_body"])
        return httpx.Response(200, json=self._public(job))

    @staticmethod
    def _public(job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_")}


def run(executor: QueueExecutor, reqs: list[RerankRequest]) -> dict[int, list[str]]:
    async def go() -> dict[int, list[str]]:
        return {i: r.docids async for i, r in executor(reqs)}

    return asyncio.run(go())


def make(service: FakeService, **kw: Any) -> QueueExecutor:
    client = AsyncClient("http://svc")
    client.http = httpx.AsyncClient(base_url="http://svc", transport=httpx.MockTransport(service))
    return QueueExecutor(client, run_id="r1", poll_min_s=0.001, poll_max_s=0.001, **kw)


def test_every_request_yields_its_result_and_workers_are_counted() -> None:
    svc = FakeService()
    ex = make(svc, in_flight=3)
    reqs = [request(f"q{i}") for i in range(7)]
    out = run(ex, reqs)
    assert out == {i: [f"q{i}-d2", f"q{i}-d1", f"q{i}-d0"] for i in range(7)}
    assert sum(ex.workers.values()) == 7 and set(ex.workers) == {"w0", "w1"}
    assert len(set(svc.posts)) == 7  # one key per request


def test_same_run_id_replays_jobs_instead_of_submitting_new_ones() -> None:
    svc = FakeService()
    reqs = [request(f"q{i}") for i in range(4)]
    run(make(svc), reqs)
    again = make(svc)
    run(again, reqs)
    assert again.replayed == 4 and len(svc.jobs) == 4
    other = make(svc)
    other.run_id = "r2"
    run(other, reqs[:1])
    assert len(svc.jobs) == 5  # another run id: a new job


def test_full_queue_is_retried_after_retry_after() -> None:
    svc = FakeService(busy_posts=3)
    out = run(make(svc), [request("q0")])
    assert out[0] == ["q0-d2", "q0-d1", "q0-d0"]
    assert len(svc.posts) == 4


def test_transient_failure_is_resubmitted_under_the_next_key() -> None:
    svc = FakeService(fail_keys={"-0": ("worker_lost", "worker died")})
    ex = make(svc, max_resubmits=2)
    out = run(ex, [request("q0")])
    assert out[0] == ["q0-d2", "q0-d1", "q0-d0"]
    assert [k.rsplit("-", 1)[1] for k in svc.posts] == ["0", "1"]


def test_transient_failures_stop_after_max_resubmits() -> None:
    svc = FakeService(fail_keys={"-0": ("engine_error", "boom"), "-1": ("engine_error", "boom again")})
    with pytest.raises(QueueJobError, match=r"failed 2 times; last: .*boom again"):
        run(make(svc, max_resubmits=1), [request("q0")])


def test_invalid_request_fails_at_once_with_the_servers_message() -> None:
    svc = FakeService(fail_keys={"-0": ("invalid_request", "candidates: at most 30 documents")})
    with pytest.raises(QueueJobError, match=r"invalid_request.*at most 30 documents"):
        run(make(svc), [request("q0")])
    assert len(svc.posts) == 1


def test_a_key_whose_job_expired_moves_on_to_the_next_key() -> None:
    svc = FakeService(expired="-0")
    out = run(make(svc), [request("q0")])
    assert out[0] == ["q0-d2", "q0-d1", "q0-d0"]
    assert [k.rsplit("-", 1)[1] for k in svc.posts] == ["0", "1"]


def test_other_client_errors_stop_at_once() -> None:
    svc = FakeService()
    with pytest.raises(RerankdError, match="unknown model 'nope'"):
        run(make(svc, model="nope"), [request("q0")])
    assert len(svc.posts) == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="in_flight must be >= 1"):
        make(FakeService(), in_flight=0)
