"""Bounded retries for calls to remote LLM servers (tenacity): backoff with jitter, a deadline.

A call is retried only when its error is transient (:func:`is_retryable`: HTTP 408, 409, 429
and 5xx answers, timeouts, connection errors).  Every other error (400, 401, 403, 404, 422, a
bug) fails at once.  Retries stop at whichever comes first:

* ``max_attempts`` attempts (the first one included);
* the ``deadline_s`` total: each attempt may use only the time left (its timeout shrinks), no
  wait starts that would end past the deadline, and the whole call is cancelled when the
  deadline passes;

then :class:`RetriesExhaustedError` (attempts spent) or :class:`DeadlineExceededError` is raised
from the last error.  Never retries forever.

Waits: before retry ``n`` (1, 2, ...) the wait is ``b = min(max_backoff_s, initial_backoff_s *
2 ** (n - 1))`` with "equal jitter" (uniformly drawn in ``[b / 2, b]``, so that many clients
failing together do not retry together); a ``Retry-After`` header in seconds (429/503 answers)
raises the wait to that value, still capped by ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay

__all__ = [
    "DeadlineExceededError",
    "RetriesExhaustedError",
    "RetryPolicy",
    "call_with_retries",
    "is_retryable",
    "retry_after_seconds",
    "status_code_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""HTTP statuses retried besides every 5xx: request timeout, conflict, rate limit."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a remote call is retried (see the module docstring)."""

    max_attempts: int = 6
    """Attempts in all, the first included (1 = no retry)."""
    deadline_s: float = 300.0
    """Total time for the call, its attempts and waits together."""
    initial_backoff_s: float = 0.5
    """Base of the first wait."""
    max_backoff_s: float = 30.0
    """Cap on a single wait (``Retry-After`` included)."""
    attempt_timeout_s: float = 120.0
    """Cap on one attempt (it gets ``min(attempt_timeout_s, time left)``)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("deadline_s", "attempt_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff times must be >= 0")

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The jittered wait before retry ``retry_number`` (1-based), without ``Retry-After``."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, retry_number - 1))
        return (rng or random).uniform(base / 2, base)


class RetriesExhaustedError(RuntimeError):
    """Every attempt failed with a transient error; the last one is the ``__cause__``."""


class DeadlineExceededError(TimeoutError):
    """The call's total deadline passed; the last error (if any) is the ``__cause__``."""


def status_code_of(exc: BaseException) -> int | None:
    """The HTTP status of an error that carries one (``openai.APIStatusError`` and the like)."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_retryable(exc: BaseException) -> bool:
    """Transient: 408/409/429/5xx answers, timeouts and connection errors."""
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    if isinstance(exc, openai.APIError):  # e.g. a malformed answer: not transient
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    code = status_code_of(exc)
    return code is not None and (code in RETRYABLE_STATUS or code >= 500)


def retry_after_seconds(exc: BaseException) -> float | None:
    """The ``Retry-After`` (or ``retry-after-ms``) header of an error's response, in seconds."""
    response = getattr(exc, "response", None)
    headers: Any = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is not None:
            return max(0.0, float(value))
    except (TypeError, ValueError):  # an HTTP date: ignored, the backoff applies
        return None
    return None


async def call_with_retries(
    attempt: Callable[[float], Awaitable[T]],
    policy: RetryPolicy,
    *,
    describe: str = "call",
    retryable: Callable[[BaseException], bool] = is_retryable,
    rng: random.Random | None = None,
) -> T:
    """Await ``attempt(timeout_s)`` until it succeeds, retrying transient errors per ``policy``.

    ``attempt`` receives the seconds it may use (the per-attempt cap or the time left, whichever
    is smaller) and should pass them to its client as the request timeout.
    """
    start = time.monotonic()
    attempts = 0
    last: BaseException | None = None

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        delay = policy.backoff(state.attempt_number, rng)
        hinted = retry_after_seconds(exc) if exc is not None else None
        if hinted is not None:
            delay = max(delay, min(hinted, policy.max_backoff_s))
        return delay

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        logger.warning(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            describe, state.attempt_number, _short(exc), state.upcoming_sleep,
        )  # fmt: skip

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.deadline_s),
        wait=wait,
        retry=retry_if_exception(retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    deadline = asyncio.timeout(policy.deadline_s)
    try:
        async with deadline:
            async for state in retrying:
                with state:
                    attempts += 1
                    left = policy.deadline_s - (time.monotonic() - start)
                    try:
                        return await attempt(max(0.001, min(policy.attempt_timeout_s, left)))
                    except Exception as e:
                        last = e
                        raise
    except Exception as e:
        elapsed = time.monotonic() - start
        if deadline.expired():  # the deadline cut an attempt or a wait short
            raise DeadlineExceededError(
                f"{describe}: no answer within the {policy.deadline_s:g}s deadline "
                f"({attempts} attempt(s) in {elapsed:.1f}s; last error: {_short(last)})"
            ) from (last or e)
        if e is last and retryable(e):
            what = (
                f"{attempts} attempts"
                if attempts >= policy.max_attempts
                else f"{attempts} attempt(s), the {policy.deadline_s:g}s deadline leaving no time for another"
            )
            raise RetriesExhaustedError(
                f"{describe}: gave up after {what} in {elapsed:.1f}s; last error: {_short(e)}"
            ) from e
        raise
    # the retry loop ends only by returning or raising
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "none"
    code = status_code_of(exc)
    text = str(exc).strip() or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"HTTP {code}: {text}" if code is not None else f"{type(exc).__name__}: {text}"
