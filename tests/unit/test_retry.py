"""Bounded retries: the policy alone, and the openai engine against a failing local HTTP server."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator

import pytest

from rerankd.engines.openai.engine import OpenAIEngine, OpenAIRequestError
from rerankd.engines.openai.retry import (
    DeadlineExceededError,
    RetriesExhaustedError,
    RetryPolicy,
    call_with_retries,
    is_retryable,
)
from tests.support.openai_server import (
    Reply,
    ScriptedServer,
    chat_reply,
    error_reply,
    fast_engine,
    user,
)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


# --------------------------------------------------------------------------- the policy alone


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=5.0)
    rng = random.Random(0)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        waits = [policy.backoff(n, rng) for _ in range(200)]
        assert all(base / 2 <= w <= base for w in waits)
        assert max(waits) - min(waits) > base / 4  # really jittered


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="deadline_s"):
        RetryPolicy(deadline_s=0)


class Transient(ConnectionError):
    pass


def test_call_with_retries_counts_attempts() -> None:
    calls: list[float] = []

    async def flaky(timeout: float) -> str:
        calls.append(timeout)
        if len(calls) < 3:
            raise Transient("reset")
        return "ok"

    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.02, attempt_timeout_s=7)
    assert asyncio.run(call_with_retries(flaky, policy)) == "ok"
    assert len(calls) == 3 and all(0 < t <= 7 for t in calls)

    calls.clear()

    async def always(timeout: float) -> str:
        calls.append(timeout)
        raise Transient("reset")

    with pytest.raises(RetriesExhaustedError, match="gave up after 2 attempts") as info:
        asyncio.run(call_with_retries(always, RetryPolicy(max_attempts=2, initial_backoff_s=0.01)))
    assert isinstance(info.value.__cause__, Transient) and len(calls) == 2


def test_non_retryable_errors_fail_at_once() -> None:
    calls = 0

    async def bug(timeout: float) -> str:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(call_with_retries(bug, RetryPolicy(max_attempts=5)))
    assert calls == 1
    assert not is_retryable(ValueError("x")) and is_retryable(TimeoutError()) and is_retryable(Transient())


# --------------------------------------------------------------------------- against a local server


def test_429_then_503_then_200(server: ScriptedServer) -> None:
    server.script(
        "/v1/chat/completions",
        error_reply(429, "slow down", {"retry-after": "0"}),
        error_reply(503, "overloaded"),
        chat_reply("[1] > [2]"),
    )
    eng = fast_engine(server, max_attempts=4)
    [gen] = asyncio.run(eng.generate([user("q")], 8))
    assert gen.text == "[1] > [2]"
    assert len(server.calls("/v1/chat/completions")) == 3


def test_retry_after_header_is_honoured(server: ScriptedServer) -> None:
    server.script("/v1/chat/completions", error_reply(429, "slow down", {"retry-after": "0.4"}), chat_reply())
    eng = fast_engine(server, max_backoff_s=2.0)
    asyncio.run(eng.generate([user("q")], 8))
    times = [t for p, _, t in server.requests if p == "/v1/chat/completions"]
    assert len(times) == 2 and times[1] - times[0] >= 0.38


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_fail_at_once_with_the_server_message(server: ScriptedServer, status: int) -> None:
    message = f"This model's maximum context length is 2048 tokens (status {status})"
    server.script("/v1/chat/completions", error_reply(status, message))
    eng = fast_engine(server, max_attempts=5)
    t0 = time.perf_counter()
    with pytest.raises(OpenAIRequestError) as info:
        asyncio.run(eng.generate([user("q")], 8))
    assert time.perf_counter() - t0 < 2.0
    assert info.value.status_code == status
    assert f"HTTP {status}" in str(info.value) and message in str(info.value)
    assert len(server.calls("/v1/chat/completions")) == 1


def test_attempts_are_bounded(server: ScriptedServer) -> None:
    server.script("/v1/chat/completions", error_reply(500, "boom"))
    eng = fast_engine(server, max_attempts=3)
    with pytest.raises(RetriesExhaustedError, match=r"3 attempts.*HTTP 500.*boom"):
        asyncio.run(eng.generate([user("q")], 8))
    assert len(server.calls("/v1/chat/completions")) == 3


def test_total_deadline_is_respected_when_failing_fast(server: ScriptedServer) -> None:
    server.script("/v1/chat/completions", error_reply(503, "overloaded"))
    eng = fast_engine(server, max_attempts=1000, deadline_s=1.0, initial_backoff_s=0.1, max_backoff_s=0.2)
    t0 = time.monotonic()
    with pytest.raises((RetriesExhaustedError, DeadlineExceededError), match="deadline"):
        asyncio.run(eng.generate([user("q")], 8))
    # no attempt starts after the 1 s deadline (small slack for the request to reach the server)
    starts = [t for p, _, t in server.requests if p == "/v1/chat/completions"]
    assert max(starts) - t0 <= 1.0 + 0.25
    assert 2 <= len(starts) < 20


def test_total_deadline_cuts_a_hanging_server(server: ScriptedServer) -> None:
    server.script("/v1/chat/completions", Reply(body={}, delay_s=5.0))
    eng = fast_engine(server, max_attempts=10, deadline_s=0.8, request_timeout_s=60)
    t0 = time.perf_counter()
    with pytest.raises((RetriesExhaustedError, DeadlineExceededError)):
        asyncio.run(eng.generate([user("q")], 8))
    assert time.perf_counter() - t0 < 1.6


def test_connection_errors_are_retried_then_reported() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = OpenAIEngine.load(
        "m",
        base_url=f"http://127.0.0.1:{port}/v1",
        tokenizer="tiktoken:cl100k_base",
        context_size=1000,  # given: nothing is asked of the server at load
        max_attempts=3,
        initial_backoff_s=0.01,
        max_backoff_s=0.02,
    )
    with pytest.raises(RetriesExhaustedError, match=r"3 attempts.*APIConnectionError"):
        asyncio.run(eng.generate([user("q")], 8))
