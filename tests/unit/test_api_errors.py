"""Bad input answers a 4xx in one error shape that names the field or limit, never a 500;
the OpenAPI document lists every status with that shape; tenants never see server internals.

The app's Redis is a closed port: every check here answers before the job store is touched.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rerankd.api.app import create_app
from rerankd.api.body import MAX_JSON_DEPTH, json_depth
from rerankd.config import Settings
from rerankd.jobs import JobRecord
from rerankd.jobs.redact import redact, worker_ref
from rerankd.jobs.views import history_view, job_view


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        redis_timeout_s=0.5,
        max_body_bytes=4096,
        max_batch_bytes=8192,
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 5555)) as c:
        yield c


RERANK = {"query": "q", "documents": ["a", "b"]}
JOB = {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = dict(resp.json())
    assert isinstance(body["message"], str) and isinstance(body["code"], str), body
    assert "detail" not in body
    return body


@pytest.mark.parametrize("prefer", ["wait=.", "wait=1.2.3", "wait=abc", "wait=-1", "wait=", "return=minimal, wait=1e9"])
def test_malformed_prefer_is_a_422_naming_the_header(client: TestClient, prefer: str) -> None:
    body = _error(client.post("/v2/rerank", json=RERANK, headers={"Prefer": prefer}), 422)
    assert body["field"] == "Prefer" and "Prefer: wait=" in body["message"]


def test_non_utf8_json_names_the_encoding(client: TestClient) -> None:
    raw = json.dumps({"query": "café", "documents": ["a"]}, ensure_ascii=False)
    latin1 = _error(
        client.post("/v2/rerank", content=raw.encode("latin-1"), headers={"content-type": "application/json"}), 422
    )
    assert latin1["code"] == "invalid_encoding" and "not UTF-8 (byte 0xe9" in latin1["message"]
    utf16 = _error(
        client.post("/v1/jobs", content=raw.encode("utf-16"), headers={"content-type": "application/json"}), 422
    )
    assert "UTF-16LE" in utf16["message"]
    declared = _error(
        client.post("/v1/rerank", content=raw.encode(), headers={"content-type": "application/json; charset=latin-1"}),
        422,
    )
    assert "charset=latin-1" in declared["message"]


def test_deep_json_names_the_depth_limit(client: TestClient) -> None:
    deep = "[" * 1500 + "]" * 1500
    body = _error(
        client.post("/v1/jobs", content=f'{{"query": {deep}}}', headers={"content-type": "application/json"}), 422
    )
    assert (
        body["code"] == "too_deep"
        and body["limit"] == MAX_JSON_DEPTH
        and f"limit of {MAX_JSON_DEPTH}" in body["message"]
    )
    # brackets inside strings are text, not nesting: this one gets to the limits (and then the absent store)
    resp = client.post("/v2/rerank", json={"query": "[" * 1500, "documents": ["a"]})
    assert resp.status_code != 422 or "deeper" not in resp.text


def test_json_depth() -> None:
    assert json_depth(b'{"a": [1, {"b": [2]}]}', 8) <= 8
    assert json_depth(b"[" * 40 + b"]" * 40, 32) == 33
    assert (
        json_depth(b'["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]', 32)
        <= 32
    )


def test_over_limit_chunked_body_is_a_413_naming_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    body = _error(client.post("/v2/rerank", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert "exceed the limit of 4096 (RERANKD_MAX_BODY_BYTES)" in body["message"]
    assert body["limit"] == 4096 and body["setting"] == "RERANKD_MAX_BODY_BYTES"
    big = _error(client.post("/v1/batches", content=chunks()), 413)  # the batch limit is larger, but not enough
    assert "RERANKD_MAX_BATCH_BYTES" in big["message"]


def test_non_utf8_batch_names_the_line(client: TestClient) -> None:
    good = json.dumps({"custom_id": "c1", "body": JOB}).encode()
    bad = json.dumps({"custom_id": "c2", "body": JOB}).encode().replace(b'"t"', b'"caf\xe9"')
    raw = _error(client.post("/v1/batches", content=good + b"\n" + bad), 422)
    assert raw["message"].startswith("line 2: ") and "UTF-8" in raw["message"]
    multi = _error(client.post("/v1/batches", files={"file": ("b.jsonl", good + b"\n" + bad)}), 422)
    assert multi["message"].startswith("line 2: ") and "UTF-8" in multi["message"]
    missing = _error(client.post("/v1/batches", files={"other": ("b.jsonl", good)}), 422)
    assert "'file'" in missing["message"]


def test_malformed_multipart_batch_is_a_422_naming_the_file(client: TestClient) -> None:
    # found by schemathesis: starlette answers a broken form with a bare 400
    boundary = "0d37f771f3609e9baf6be26654101f5f"
    body = f"--{boundary}\r\nTrue--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    err = _error(client.post("/v1/batches", content=body, headers=headers), 422)
    assert err["field"] == "file" and "malformed multipart" in err["message"]


def test_validation_errors_have_our_shape(client: TestClient) -> None:
    body = _error(client.post("/v2/rerank", json={"query": "q"}), 422)
    assert body["field"] == "documents" and body["code"] == "invalid_request"
    body = _error(client.post("/v2/rerank", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert "JSON" in body["message"]
    _error(client.get("/v1/nope"), 404)
    _error(client.put("/v2/rerank", json=RERANK), 405)


def test_health_without_a_key_says_only_ok_or_not(client: TestClient) -> None:
    with TestClient(client.app, client=("10.0.0.9", 5555)) as remote:  # no keys: only loopback sees details
        resp = remote.get("/healthz")
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
        assert set(resp.json()) == {"status", "message", "code"} and resp.json()["status"] == "unavailable"
        assert "127.0.0.1" not in resp.text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    detailed = client.get("/healthz")
    assert detailed.status_code == 503 and detailed.json()["workers"] == []


def test_openapi_documents_every_status_with_the_error_shape(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc) and "ErrorBody" in doc["components"]["schemas"]
    expected = {
        ("post", "/v2/rerank"): {"200", "401", "404", "413", "422", "429", "503", "504"},
        ("post", "/v1/jobs"): {"202", "401", "404", "413", "422", "429", "503"},
        ("get", "/v1/jobs/{job_id}"): {"200", "401", "404", "503"},
        ("post", "/v1/batches"): {"202", "401", "413", "422", "429", "503"},
        ("get", "/v1/batches/{batch_id}/results"): {"200", "401", "404", "409", "503"},
        ("get", "/healthz"): {"200", "503"},
        ("get", "/readyz"): {"200", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = doc["paths"][path][method]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and path not in ("/healthz", "/readyz"):
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status)
                if status in ("429", "503") and path not in ("/healthz", "/readyz"):
                    assert "Retry-After" in resp["headers"], (method, path, status)
    content = doc["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert content["application/x-ndjson"]["schema"]["items"]["$ref"].endswith("/BatchLineDoc")
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert "BatchBody" in doc["components"]["schemas"]


def test_tenants_see_no_urls_addresses_or_worker_names() -> None:
    text = (
        "ConnectError: All connection attempts failed for 'http://10.1.2.3:8000/v1/chat/completions' "
        "(vllm-0.internal:8000, [fd00::1]:8000, fe80::1) on gpu-node-7:4711"
    )
    clean = redact(text, ["gpu-node-7"])
    for secret in ("10.1.2.3", "8000", "vllm-0", "fd00", "fe80", "gpu-node-7", "4711", "http"):
        assert secret not in clean, clean
    assert clean.startswith("ConnectError: All connection attempts failed")
    assert (
        redact("documents[0]: 51 characters exceed the limit of 50")
        == "documents[0]: 51 characters exceed the limit of 50"
    )
    record = JobRecord(
        id="job_1",
        status="failed",
        owner="a",
        model="m",
        queue="q",
        strategy="s",
        created_at=1.0,
        deadline_s=5.0,
        worker="gpu-node-7:4711",
        error="engine_error: gpu-node-7 could not reach http://vllm:8000/x",
        error_code="engine_error",
    )
    view = job_view(record)
    assert view["worker"] == worker_ref("gpu-node-7:4711") and view["worker"].startswith("wk_")
    assert "gpu-node-7" not in json.dumps(view) and "vllm:8000" not in json.dumps(view)
    history = history_view(["1.0 running gpu-node-7:4711 attempt 1", "2.0 requeued (lease of gpu-node-7:4711 expired)"])
    assert "gpu-node-7" not in " ".join(history) and history[0].endswith(f"{worker_ref('gpu-node-7:4711')} attempt 1")


def test_a_bug_still_answers_our_shape_and_a_model_error_is_a_422(client: TestClient) -> None:
    from rerankd.types import Query

    async def boom() -> None:
        raise RuntimeError("bug")

    async def bad_model() -> None:
        Query(text="")

    client.app.add_api_route("/test-boom", boom)  # type: ignore[attr-defined]
    client.app.add_api_route("/test-model", bad_model)  # type: ignore[attr-defined]
    assert _error(client.get("/test-boom"), 500)["code"] == "internal_error"
    assert _error(client.get("/test-model"), 422)["field"] == "text"
