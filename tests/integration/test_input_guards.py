"""A hostile tenant against a real server (``python -m rerankd.api``, uvicorn, Redis; issue 20):
``/metrics`` needs a key and shows a tenant no other tenant's name, a stalled body gets 408 and
the connection closes, a malformed Content-Length / Transfer-Encoding gets the API's error shape,
empty document lists and over-long integers are 422s naming the field.  No worker is needed:
the jobs here wait on a model nobody serves."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rerankd.api.body import MAX_INT_DIGITS
from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port

REPO = Path(__file__).resolve().parents[2]
KEYS = {"alice": "key-alice", "bob": "key-bob"}
METRICS_KEY = "key-metrics-guards"

pytestmark = pytest.mark.integration


@dataclass
class Api:
    url: str
    port: int

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(test_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": test_redis,
        "RERANKD_KEY_PREFIX": f"guards{secrets.token_hex(3)}",
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in KEYS.items()),
        "RERANKD_METRICS_KEY": METRICS_KEY,
        "RERANKD_BODY_TIMEOUT_S": "1",
        "RERANKD_ALIASES": json.dumps({"ghost": {"model": "ghost-guards"}}),
    }
    stack = LocalStack(env, tmp_path_factory.mktemp("guards-api"), cwd=REPO)
    port = free_port()
    try:
        stack.start_api(port)
        yield Api(stack.url, port)
    finally:
        stack.stop()


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Send ``request`` as is and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status.split()[1]), headers, json.loads(body)


def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes(api: Api) -> None:
    sent = b'{"query": "q", '
    request = (
        b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-alice\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + sent
    )
    status, headers, body = _raw(api.port, request)  # returns: the server closed the connection
    assert status == 408 and headers["connection"] == "close"
    assert body == {
        "message": f"body: no data for 1 s after {len(sent)} bytes, before the body's end (RERANKD_BODY_TIMEOUT_S)",
        "code": "request_timeout",
        "field": "body",
        "limit": 1,
        "setting": "RERANKD_BODY_TIMEOUT_S",
    }


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        (b"Content-Length: 12abc\r\n", "Content-Length"),
        (b"Content-Length: 5\r\nContent-Length: 7\r\n", "Content-Length"),
        (b"Transfer-Encoding: gzip\r\n", "Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "Content-Length"),
    ],
)
def test_a_malformed_content_length_or_transfer_encoding_gets_the_error_shape(
    api: Api, headers: bytes, field: str
) -> None:
    request = b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + b"\r\n{}"
    status, head, body = _raw(api.port, request)
    assert status == 400 and head["content-type"] == "application/json" and head["connection"] == "close"
    assert body["code"] == "invalid_header" and body["field"] == field
    assert str(body["message"]).startswith(f"{field}: invalid header (")


def test_metrics_need_a_key_and_tenants_see_only_their_own_series(api: Api) -> None:
    job = {"model": "ghost", "query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}
    ids = {}
    for owner, key in KEYS.items():
        resp = httpx.post(f"{api.url}/v1/jobs", json=job, headers=api.headers(key), timeout=30)
        assert resp.status_code == 202, resp.text
        ids[owner] = resp.json()["id"]
    try:
        refused = httpx.get(f"{api.url}/metrics", timeout=30)
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"

        def in_flight(key: str) -> set[str]:
            resp = httpx.get(f"{api.url}/metrics", headers=api.headers(key), timeout=30)
            assert resp.status_code == 200, resp.text
            return {line for line in resp.text.splitlines() if line.startswith("rerankd_jobs_in_flight{")}

        alice = 'rerankd_jobs_in_flight{key="alice",kind="interactive"} 1.0'
        bob = 'rerankd_jobs_in_flight{key="bob",kind="interactive"} 1.0'
        assert in_flight(METRICS_KEY) == {alice, bob}
        assert in_flight(KEYS["alice"]) == {alice}
        assert in_flight(KEYS["bob"]) == {bob}
    finally:
        for owner, job_id in ids.items():
            httpx.post(f"{api.url}/v1/jobs/{job_id}/cancel", headers=api.headers(KEYS[owner]), timeout=30)


def test_empty_documents_and_over_long_integers_are_422s_naming_the_field(api: Api) -> None:
    alice = api.headers(KEYS["alice"])
    for path, field in [("/v2/rerank", "documents"), ("/v1/rerank", "documents"), ("/rerank", "texts")]:
        resp = httpx.post(f"{api.url}{path}", json={"query": "q", field: []}, headers=alice, timeout=30)
        assert resp.status_code == 422, resp.text
        assert resp.json() == {
            "message": f"{field}: List should have at least 1 item after validation, not 0",
            "code": "invalid_request",
            "field": field,
            "limit": 1,
        }
    content = '{"query": "q", "documents": ["a"], "top_n": ' + "9" * 5000 + "}"
    headers = {**alice, "Content-Type": "application/json"}
    resp = httpx.post(f"{api.url}/v2/rerank", content=content, headers=headers, timeout=30)
    assert resp.status_code == 422, resp.text
    assert resp.json() == {
        "message": f"top_n: an integer of 5000 digits exceeds the limit of {MAX_INT_DIGITS} digits",
        "code": "over_limit",
        "field": "top_n",
        "limit": MAX_INT_DIGITS,
    }
