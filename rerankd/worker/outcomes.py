"""What a worker does around a job's run: retrying the job store while Redis is away, and the
metric updates of a finished attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rerankd.jobs import ClaimResult, MetricsWriter
from rerankd.types import RerankResult

__all__ = ["CLAIM_RETRY_S", "FINISH_RETRY_S", "record_metrics", "retrying"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FINISH_RETRY_S = 600.0
"""How long a worker keeps trying to record a finished job's outcome while Redis is away."""
CLAIM_RETRY_S = 120.0
"""How long a worker keeps trying to claim a delivered job while Redis is away (then the
message is requeued, or comes back after the visibility timeout)."""


async def retrying(what: str, call: Callable[[], Awaitable[_T]], limit_s: float = FINISH_RETRY_S) -> _T:
    """``await call()``, retried with backoff while Redis is unreachable (up to ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    delay = 0.5
    while True:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: Redis unavailable (%s); retrying in %.1fs", what, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def record_metrics(
    m: MetricsWriter,
    claim: ClaimResult,
    status: str,
    result: RerankResult | None,
    run_s: float,
) -> None:
    """Metric updates of a finished attempt (applied by the finish script if it holds)."""
    labels = {"model": claim.model, "strategy": claim.strategy}
    m.inc("jobs_finished_total", {**labels, "status": status})
    m.observe("job_queue_wait_seconds", {"model": claim.model}, max(0.0, claim.started_at - claim.created_at))
    m.observe("job_run_seconds", labels, max(0.0, run_s))
    if claim.request is not None:
        m.observe("job_documents", {"strategy": claim.strategy}, len(claim.request.candidates))
    if claim.attempt > 1:
        m.inc("jobs_redelivered_total", {"model": claim.model})
    if result is not None:
        m.inc("llm_calls_total", labels, result.usage.llm_calls)
        m.inc("prompt_tokens_total", labels, result.usage.prompt_tokens)
        m.inc("completion_tokens_total", labels, result.usage.completion_tokens)
        m.inc("parse_repairs_total", labels, len(result.warnings))
