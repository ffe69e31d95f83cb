"""Defects a hostile tenant found against the defaults (issue 20): ``/metrics`` behind a key (an API
key sees only its own per-key series), a stalled request body answers 408, an over-long integer
is a 422 naming its field, uvicorn's own 400 for a malformed Content-Length or Transfer-Encoding
has the API's error shape.  The real-HTTP side is tests/integration/test_input_guards.py."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import Message

from rerankd.api.app import create_app
from rerankd.api.body import MAX_INT_DIGITS, BodyGuardMiddleware, long_integer
from rerankd.api.protocol import H11Protocol, HttpToolsProtocol, bad_request_body, http_protocol
from rerankd.config import Settings
from rerankd.jobs.keys import Keys

KEYS = "alice:key-a,bob:key-b"
METRICS = "key-metrics"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {"redis_url": f"redis://127.0.0.1:{_closed_port()}/0", "redis_timeout_s": 0.5}
    return Settings(**{**base, **kw})


# ------------------------------------------------------------------ over-long integers


def test_long_integer_names_the_field_of_the_first_over_long_literal() -> None:
    big = "7" * 5000
    assert long_integer(f'{{"query": "q", "top_n": {big}}}'.encode()) == ("top_n", 5000)
    assert long_integer(f'{{"a": [1, {{"b": -{big}}}]}}') == ("a.1.b", 5000)
    assert long_integer(big.encode()) == ("body", 5000)
    assert long_integer(b'{"top_n": ' + b"9" * MAX_INT_DIGITS + b"}") is None
    assert long_integer(b'{"top_n": ' + b"9" * (MAX_INT_DIGITS + 1) + b"}") == ("top_n", MAX_INT_DIGITS + 1)
    assert long_integer(f'{{"text": "{big}", "x": 1.{big}}}'.encode()) is None  # strings and floats
    assert long_integer(f'{{"top_n": {big}'.encode()) is None  # not JSON: the parser says so later


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(_settings(max_body_bytes=100_000)), client=("127.0.0.1", 5555)) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v2/rerank", '{"query": "q", "documents": ["a"], "top_n": %s}', "top_n"),
        ("/v1/rerank", '{"query": "q", "documents": ["a"], "max_tokens_per_doc": -%s}', "max_tokens_per_doc"),
        (
            "/v1/jobs",
            '{"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}], '
            '"strategy": {"name": "sliding_window", "window_size": %s}}',
            "strategy.window_size",
        ),
    ],
)
def test_a_5000_digit_integer_is_a_422_naming_its_field(client: TestClient, path: str, body: str, field: str) -> None:
    resp = client.post(path, content=body % ("1" * 5000), headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json() == {
        "message": f"{field}: an integer of 5000 digits exceeds the limit of {MAX_INT_DIGITS} digits",
        "code": "over_limit",
        "field": field,
        "limit": MAX_INT_DIGITS,
    }


def test_a_batch_line_with_an_over_long_integer_names_the_line_and_field(client: TestClient) -> None:
    job = {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}
    good = json.dumps({"custom_id": "a", "body": job})
    bad = json.dumps({"custom_id": "b", "body": {**job, "top_n": 1}}).replace('"top_n": 1', '"top_n": ' + "3" * 4500)
    resp = client.post("/v1/batches", content=f"{good}\n{bad}\n")
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (
        body["message"] == f"line 2: body.top_n: an integer of 4500 digits exceeds the limit of {MAX_INT_DIGITS} digits"
    )
    assert (body["field"], body["limit"]) == ("line 2", MAX_INT_DIGITS)


# ------------------------------------------------------------------ stalled bodies


def test_a_body_that_stalls_before_its_end_is_a_408_and_the_connection_closes() -> None:
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> Message:
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b'{"query"', "more_body": True}
        await asyncio.Event().wait()  # the client stalls: Content-Length said more
        raise AssertionError

    sent: list[bool] = []
    out: list[Message] = []

    async def send(message: Message) -> None:
        out.append(message)

    guard = BodyGuardMiddleware(app, _settings(body_timeout_s=1))
    scope = {"type": "http", "method": "POST", "path": "/v2/rerank", "headers": [(b"content-length", b"100")]}
    asyncio.run(guard(scope, receive, send))
    assert not reached
    start, body = out
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"]) == {
        "message": "body: no data for 1 s after 8 bytes, before the body's end (RERANKD_BODY_TIMEOUT_S)",
        "code": "request_timeout",
        "field": "body",
        "limit": 1,
        "setting": "RERANKD_BODY_TIMEOUT_S",
    }


# ------------------------------------------------------------------ /metrics behind a key


@pytest.fixture(scope="module")
def metrics_app(private_redis_url: str) -> Iterator[tuple[str, str]]:
    """Two tenants with jobs in flight, as the job scripts record them (``lua/counters.lua``)."""
    prefix = f"test-mkey-{secrets.token_hex(3)}"
    keys, r = Keys(prefix), redis.Redis.from_url(private_redis_url)
    until = time.time() + 3600
    for owner, n in {"alice": 2, "bob": 3, "bob|batch": 4}.items():
        r.zadd(keys.inflight(owner), {f"job_{owner}_{i}": until for i in range(n)})
        r.sadd(keys.inflight_owners, owner)
    try:
        yield private_redis_url, prefix
    finally:
        found = list(r.scan_iter(match=f"{prefix}*"))
        if found:
            r.delete(*found)
        r.close()


def _scrape(target: tuple[str, str], token: str | None, host: str = "127.0.0.1", **kw: Any) -> tuple[int, Any]:
    url, prefix = target
    settings = Settings(redis_url=url, key_prefix=prefix, **kw)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(create_app(settings), client=(host, 5555)) as c:
        resp = c.get("/metrics", headers=headers)
    if resp.status_code == 200:
        return 200, [line for line in resp.text.splitlines() if line.startswith("rerankd_jobs_in_flight{")]
    return resp.status_code, resp.json()


def test_metrics_need_a_key_and_a_tenant_sees_only_its_own_series(metrics_app: tuple[str, str]) -> None:
    every = [
        'rerankd_jobs_in_flight{key="alice",kind="interactive"} 2.0',
        'rerankd_jobs_in_flight{key="bob",kind="interactive"} 3.0',
        'rerankd_jobs_in_flight{key="bob",kind="batch"} 4.0',
    ]
    keyed = {"api_keys": KEYS, "metrics_key": METRICS}
    assert _scrape(metrics_app, METRICS, **keyed) == (200, every)
    assert _scrape(metrics_app, "key-a", **keyed) == (200, every[:1])
    assert _scrape(metrics_app, "key-b", **keyed) == (200, every[1:])
    status, body = _scrape(metrics_app, None, **keyed)  # loopback is no key
    assert (status, body["code"]) == (401, "unauthorized") and "missing API key" in body["message"]
    assert _scrape(metrics_app, "nope", **keyed)[0] == 401
    assert _scrape(metrics_app, "key-a", api_keys=KEYS) == (200, every[:1])  # no metrics key: tenants still see theirs
    # no API keys: as every route, loopback clients only; the metrics key opens it to others
    assert _scrape(metrics_app, None) == (200, every)
    assert _scrape(metrics_app, None, host="10.1.2.3")[0] == 401
    assert _scrape(metrics_app, METRICS, host="10.1.2.3", metrics_key=METRICS) == (200, every)
    status, body = _scrape(metrics_app, None, host="10.1.2.3", metrics_key=METRICS)
    assert status == 401 and "RERANKD_METRICS_KEY" in body["message"]
    assert _scrape(metrics_app, "nope", metrics_key=METRICS)[0] == 401


def test_the_metrics_key_cannot_be_a_tenants_key() -> None:
    with pytest.raises(ValueError, match="RERANKD_METRICS_KEY is also the API key of 'alice'"):
        _settings(api_keys=KEYS, metrics_key="key-a")
    with pytest.raises(ValueError, match="RERANKD_METRICS_KEY is blank"):
        _settings(metrics_key=" ")


# ------------------------------------------------------------------ uvicorn's own 400


@pytest.mark.parametrize(
    ("reason", "field", "code"),
    [
        ("bad Content-Length", "Content-Length", "invalid_header"),
        ("Duplicate Content-Length", "Content-Length", "invalid_header"),
        ("Only Transfer-Encoding: chunked is supported", "Transfer-Encoding", "invalid_header"),
        ("Invalid character in chunk size", "Transfer-Encoding", "invalid_header"),
        ("Invalid method encountered", None, "bad_request"),
    ],
)
def test_a_parser_refusal_names_the_header(reason: str, field: str | None, code: str) -> None:
    body = bad_request_body(reason)
    assert body["code"] == code and body.get("field") == field and reason in body["message"]


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):  # the server closes after its 400
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


@pytest.mark.parametrize("protocol", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_uvicorns_400_has_the_error_shape(protocol: Any) -> None:
    if protocol is None:
        pytest.skip("httptools is not installed")
    server = uvicorn.Server(uvicorn.Config(_echo, host="127.0.0.1", port=0, http=protocol, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        cases = [
            (b"Content-Length: abc\r\n", "Content-Length"),
            (b"Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length"),
            (b"Transfer-Encoding: gzip\r\n", "Transfer-Encoding"),
        ]
        for headers, field in cases:
            status, head, body = _exchange(port, b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nhello")
            assert status == "HTTP/1.1 400 Bad Request" and head["connection"] == "close"
            assert head["content-type"] == "application/json" and int(head["content-length"]) == len(body)
            err = json.loads(body)
            assert (err["code"], err["field"]) == ("invalid_header", field) and err["message"].startswith(field)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_python_m_rerankd_api_runs_the_json_protocol(monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    from rerankd.api import __main__ as api_main

    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    api_main.main(["--port", "1", "--workers", workers])
    assert ran["http"] is http_protocol() is (HttpToolsProtocol or H11Protocol)
