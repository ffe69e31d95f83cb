"""Fairness on the real service: per-key quotas, lanes, atomic paged batches, field limits,
max_tokens_per_doc on a real worker, relevance_score, strict settings.

Quota tests run a second API (same Redis, prefix and workers as the session's ``service``) with
keys and quotas of their own, so the other tests' keys are not limited."""

from __future__ import annotations

import json
import subprocess
import sys
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
from tests.support.stack import METRICS_KEY, REPO, Service

pytestmark = pytest.mark.integration

QUOTA_KEYS = {"carol": "key-carol", "dave": "key-dave", "erin": "key-erin"}


@dataclass
class QuotaApi:
    url: str
    stack: LocalStack

    def headers(self, owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {QUOTA_KEYS[owner]}"}


@pytest.fixture(scope="module")
def quota_api(service: Service) -> Iterator[QuotaApi]:
    aliases = {**json.loads(service.env["RERANKD_ALIASES"]), "ghost-quota": {"model": "ghost-quota"}}
    aliases["lanes"] = {"model": "lane-model"}
    env = {
        **service.env,
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in QUOTA_KEYS.items()),
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_QUOTAS": json.dumps({"carol": {"jobs_in_flight": 1}, "dave": {"requests_per_minute": 2}}),
        "RERANKD_MAX_QUEUE_DEPTH": "100",
    }
    stack = LocalStack(env, service.logs / "quota-api", cwd=REPO)
    try:
        stack.start_api(free_port(), log="quota-api.log")
        yield QuotaApi(stack.url, stack)
    finally:
        stack.stop()


def _rerank(url: str, headers: dict[str, str], **extra: Any) -> httpx.Response:
    body = {"model": "tiny", "query": "capital of france", "documents": ["Paris is the capital.", "Rome."], **extra}
    return httpx.post(f"{url}/v2/rerank", json=body, headers=headers, timeout=120)


def _metrics(url: str, headers: dict[str, str]) -> str:
    resp = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.text


def _job(url: str, headers: dict[str, str], model: str = "ghost-quota") -> httpx.Response:
    body = {"model": model, "query": {"text": "q"}, "candidates": [{"docid": "a", "text": "x"}]}
    return httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=30)


def test_a_tenant_at_its_quota_gets_429_while_another_tenants_sync_call_succeeds(quota_api: QuotaApi) -> None:
    url = quota_api.url
    queued = _job(url, quota_api.headers("carol"))  # nobody serves ghost-quota: it stays in flight
    assert queued.status_code == 202, queued.text
    refused = _rerank(url, quota_api.headers("carol"))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5", refused.text
    body = refused.json()
    assert body["code"] == "quota_exceeded" and body["limit"] == 1
    assert "jobs_in_flight is 1 (RERANKD_QUOTA_JOBS_IN_FLIGHT or RERANKD_QUOTAS['carol']" in body["message"]
    other = _rerank(url, quota_api.headers("erin"))  # another tenant is not affected
    assert other.status_code == 200 and len(other.json()["results"]) == 2
    text = _metrics(url, {"Authorization": f"Bearer {METRICS_KEY}"})  # the operator's view: every key
    assert 'rerankd_jobs_in_flight{key="carol",kind="interactive"} 1.0' in text
    # tenants see their own in-flight series only: no other tenant's name
    assert 'rerankd_jobs_in_flight{key="carol",kind="interactive"} 1.0' in _metrics(url, quota_api.headers("carol"))
    assert 'key="carol"' not in _metrics(url, quota_api.headers("erin"))
    assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
    cancel = httpx.post(f"{url}/v1/jobs/{queued.json()['id']}/cancel", headers=quota_api.headers("carol"))
    assert cancel.status_code == 200
    assert _rerank(url, quota_api.headers("carol")).status_code == 200  # the slot came back


def test_requests_per_minute_answer_an_accurate_retry_after(quota_api: QuotaApi, service: Service) -> None:
    r = redis.Redis.from_url(service.redis_url)
    if int(r.time()[0]) % 60 > 50:  # stay inside one fixed window of the Redis clock
        time.sleep(61 - int(r.time()[0]) % 60)
    for _ in range(2):
        assert _job(quota_api.url, quota_api.headers("dave"), model="tiny").status_code == 202
    refused = _job(quota_api.url, quota_api.headers("dave"), model="tiny")
    assert refused.status_code == 429, refused.text
    left = 60 - int(r.time()[0]) % 60
    assert abs(int(refused.headers["retry-after"]) - left) <= 1
    assert "requests_per_minute is 2 (RERANKD_QUOTA_REQUESTS_PER_MINUTE" in refused.json()["message"]


def test_batch_jobs_run_after_interactive_and_low_priority_work(quota_api: QuotaApi, service: Service) -> None:
    url, headers = quota_api.url, quota_api.headers("erin")
    lines = "\n".join(
        json.dumps(
            {"custom_id": f"b{i}", "body": {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "x"}]}}
        )
        for i in range(4)
    )
    batch = httpx.post(f"{url}/v1/batches?model=lanes", content=lines, headers=headers, timeout=30)
    assert batch.status_code == 202, batch.text
    job = _job(url, headers, model="lanes").json()
    low: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: low.update(_rerank(url, headers, model="lanes", priority=7).json()))
    caller.start()
    r = redis.Redis.from_url(service.redis_url)
    lane = f"{service.prefix}.lane-model"
    deadline = time.monotonic() + 30
    while r.llen(lane + "\x06\x166") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (r.llen(lane), r.llen(lane + "\x06\x166"), r.llen(lane + "\x06\x169")) == (1, 1, 4)
    service.start_worker("lanes", "lane-model", SLEEP_ENGINE, concurrency=1)
    try:
        caller.join(240)
        deadline = time.monotonic() + 120
        status: dict[str, Any] = {}
        while status.get("status") != "completed" and time.monotonic() < deadline:
            status = httpx.get(f"{url}/v1/batches/{batch.json()['id']}", headers=headers).json()
            time.sleep(0.2)
        assert status["counts"]["succeeded"] == 4
        started = {}
        for key in r.lrange(f"{service.prefix}:batch:{batch.json()['id']}:items", 0, -1):
            started[key.decode()] = float(r.hget(f"{service.prefix}:job:{key.decode()}", "started_at") or 0)
        interactive = float(r.hget(f"{service.prefix}:job:{job['id']}", "started_at") or 0)
        low_started = float(r.hget(f"{service.prefix}:job:{low['id']}", "started_at") or 0)
        assert 0 < interactive < low_started < min(started.values()), (interactive, low_started, started)
    finally:
        service.kill_worker("lanes")


def test_priority_out_of_range_is_rejected(quota_api: QuotaApi) -> None:
    resp = _rerank(quota_api.url, quota_api.headers("erin"), priority=1000)
    assert resp.status_code == 422 and "priority" in resp.json()["message"]


def test_batch_is_idempotent_and_its_results_are_paged(service: Service) -> None:
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"row-{i}",
                "body": {
                    "query": {"text": "q"},
                    "candidates": [{"docid": "a", "text": "x"}, {"docid": "b", "text": "y"}],
                },
            }
        )
        for i in range(3)
    )
    headers = {**service.headers(), "Idempotency-Key": "fair-batch-1"}
    first = httpx.post(f"{service.url}/v1/batches?model=tiny", content=lines, headers=headers)
    again = httpx.post(f"{service.url}/v1/batches?model=tiny", content=lines, headers=headers)
    other = httpx.post(f"{service.url}/v1/batches?model=tiny", content=lines + "\n", headers=headers)
    other_body = httpx.post(
        f"{service.url}/v1/batches?model=tiny", content=lines.replace("row-0", "r0"), headers=headers
    )
    assert first.status_code == 202 and again.status_code == 202, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 202 or other.status_code == 409  # trailing newline: same bytes or not
    assert other_body.status_code == 409 and other_body.json()["code"] == "idempotency_key_reused"
    batch_id = first.json()["id"]
    deadline = time.monotonic() + 120
    status = first.json()
    while status["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
        status = httpx.get(f"{service.url}/v1/batches/{batch_id}", headers=service.headers()).json()
    assert status["counts"]["succeeded"] == 3 and status["finished"] == 3
    page = httpx.get(f"{service.url}/v1/batches/{batch_id}/results?limit=2", headers=service.headers())
    assert [json.loads(x)["custom_id"] for x in page.text.splitlines()] == ["row-0", "row-1"]
    assert page.headers["x-next-cursor"] == "2" and 'cursor=2&limit=2>; rel="next"' in page.headers["link"]
    rest = httpx.get(f"{service.url}/v1/batches/{batch_id}/results?cursor=2&limit=2", headers=service.headers())
    rows = [json.loads(x) for x in rest.text.splitlines()]
    assert [r["custom_id"] for r in rows] == ["row-2"] and "link" not in rest.headers
    assert len(rows[0]["response"]["ranking"]) == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"candidates": [{"docid": "d" * 257, "text": "x"}]},
            "candidates[0].docid: 257 characters exceed the limit of 256 (RERANKD_MAX_DOCID_CHARS)",
        ),
        ({"candidates": [{"docid": "a", "text": "x", "title": "t" * 2001}]}, "(RERANKD_MAX_TITLE_CHARS)"),
        (
            {"strategy": {"name": "sliding_window", "window_size": 500, "stride": 10}},
            "window_size must be between 2 and 100",
        ),
        ({"strategy": {"name": "icr", "max_words_per_passage": 10**9}}, "max_words_per_passage"),
    ],
)
def test_field_limits_name_the_field(service: Service, body: dict[str, Any], needle: str) -> None:
    job = {"model": "tiny", "query": {"text": "q"}, "candidates": [{"docid": "a", "text": "x"}], **body}
    resp = httpx.post(f"{service.url}/v1/jobs", json=job, headers=service.headers())
    assert resp.status_code == 422 and needle in resp.json()["message"], resp.text


def test_max_tokens_per_doc_counts_model_tokens_on_the_worker(service: Service) -> None:
    docs = ["supercalifragilisticexpialidocious", "a"]  # one word, many tokens
    resp = _rerank(service.url, service.headers(), documents=docs, max_tokens_per_doc=2)
    assert resp.status_code == 200, resp.text
    assert "max_tokens_per_doc: 1 document(s) cut to 2 tokens" in resp.json()["meta"]["warnings"]
    job = httpx.get(f"{service.url}/v1/jobs/{resp.json()['id']}?include=request", headers=service.headers()).json()
    assert job["request"]["max_tokens_per_doc"] == 2  # sent to the worker, applied there


def test_relevance_score_is_the_documented_rank_map(service: Service) -> None:
    docs = ["Paris is the capital of France.", "Rome is in Italy.", "Bananas are yellow."]
    full = _rerank(service.url, service.headers(), documents=docs).json()["results"]
    assert [r["relevance_score"] for r in full] == [1.0, 1 - 1 / 3, 1 - 2 / 3]
    top = _rerank(service.url, service.headers(), documents=docs, top_n=1).json()["results"]
    assert [r["relevance_score"] for r in top] == [1.0]


def test_unknown_setting_stops_the_api_at_start(service: Service) -> None:
    env = {**service.env, "RERANKD_MAX_DOCUMENT": "5"}
    out = subprocess.run(
        [sys.executable, "-m", "rerankd.api", "--port", str(free_port())],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert b"unknown environment variable RERANKD_MAX_DOCUMENT; did you mean RERANKD_MAX_DOCUMENTS?" in out.stderr
