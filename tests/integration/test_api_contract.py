"""The API's contract on the real stack (uvicorn, Redis, Celery workers): bad input keeps the
keep-alive connection, sync callers get 503 + Retry-After (never a dropped connection) and a
timed-out sync call cancels its job."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import Service

pytestmark = pytest.mark.integration

JOB = {"model": "slow", "query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "rerankd-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n'
            "Content-Type: application/x-ndjson\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _chunks(n: int, size: int = 1000) -> Iterator[bytes]:
    for _ in range(n):
        yield b" " * size


def test_bad_input_gets_a_4xx_naming_the_problem_on_the_same_connection(service: Service) -> None:
    host, port = service.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    rerank = json.dumps({"model": "slow", "query": "q", "documents": ["a", "b"]}).encode()
    bad_line = json.dumps({"custom_id": "c", "body": JOB}).encode().replace(b'"t"', b'"caf\xe9"')
    multipart, multipart_type = _multipart(bad_line)
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, Any, dict[str, str], int, str]] = [
        ("POST", "/v2/rerank", rerank, {**json_type, "Prefer": "wait=."}, 422, "Prefer: wait="),
        ("POST", "/v1/rerank", rerank, {**json_type, "Prefer": "wait=1.2.3"}, 422, "Prefer: wait="),
        (
            "POST",
            "/v1/jobs",
            json.dumps(JOB).replace('"q"', '"caf\u00e9"').encode("latin-1"),
            json_type,
            422,
            "not UTF-8",
        ),
        ("POST", "/v1/jobs", b'{"query": ' + b"[" * 6000 + b"]" * 6000 + b"}", json_type, 422, "nested deeper"),
        ("POST", "/v1/batches", bad_line, {"Content-Type": "application/x-ndjson"}, 422, "line 1: not UTF-8"),
        ("POST", "/v1/batches", multipart, {"Content-Type": multipart_type}, 422, "line 1: not UTF-8"),
        (
            "POST",
            "/v2/rerank",
            _chunks(120),
            {**json_type, "Transfer-Encoding": "chunked"},
            413,
            "RERANKD_MAX_BODY_BYTES",
        ),
        ("GET", "/v1/jobs/job_nope", None, {}, 404, "no job"),
        ("POST", "/v2/rerank", b"{not json", json_type, 422, "JSON"),
    ]
    sock = None
    for method, path, body, headers, status, needle in cases:
        chunked = headers.pop("Transfer-Encoding", None) is not None
        conn.request(method, path, body=body, headers={**service.headers(), **headers}, encode_chunked=chunked)
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status == status and needle in data["message"], (path, resp.status, data)
        assert set(data) >= {"message", "code"} and "detail" not in data
        assert (resp.getheader("connection") or "").lower() != "close", (path, data)
        sock = sock or conn.sock
        assert conn.sock is sock, f"{path}: the connection was not kept"
    conn.request("POST", "/v2/rerank", body=rerank, headers={**service.headers(), **json_type})
    ok = conn.getresponse()
    assert ok.status == 200 and len(json.loads(ok.read())["results"]) == 2 and conn.sock is sock


def test_readyz_is_a_cheap_probe_and_healthz_needs_a_key_for_details(service: Service) -> None:
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "ok"}
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{service.url}/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{service.url}/healthz", headers=service.headers()).json()["workers"]


def test_sync_timeout_answers_503_and_cancels_its_job(service: Service) -> None:
    resp = httpx.post(
        f"{service.url}/v2/rerank",
        json={"model": "slow", "query": "sleep=60", "documents": ["a", "b"]},
        headers={**service.headers(), "Prefer": "wait=3"},
        timeout=120,
    )
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
    body = resp.json()
    assert body["code"] == "unavailable" and "within 3s" in body["message"]
    match = re.search(r"\b(job_[0-9a-f]+)\b", body["message"])
    assert match, body
    job = service.wait_job(match.group(1), timeout=60)
    # never left to run for nobody: cancelled while running, or expired while still queued
    assert job["status"] in ("cancelled", "expired"), job
    if job["status"] == "cancelled":
        assert job["cancel_requested"] and job["error"]["code"] == "cancelled"


def test_sync_caller_gets_503_when_its_worker_dies(service: Service) -> None:
    service.start_worker("api-sync", "api-sync", SLEEP_ENGINE, concurrency=1)
    service.wait_workers(["api-sync"], timeout=120)
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["resp"] = httpx.post(
                f"{service.url}/v2/rerank",
                json={"model": "api-sync", "query": "sleep=120", "documents": ["a", "b"]},
                headers={**service.headers(), "Prefer": "wait=15"},
                timeout=120,
            )
        except httpx.HTTPError as e:  # a dropped connection is the failure this test is about
            out["error"] = e

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(w["model"] == "api-sync" and w["running"] > 0 for w in service.live_workers()):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the api-sync worker never ran the job")
    service.kill_worker("api-sync")
    caller.join(120)
    assert "error" not in out, out
    resp = out["resp"]
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
    assert resp.json()["code"] in ("unavailable", "worker_lost"), resp.text
