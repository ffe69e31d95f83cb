"""What the ``vllm`` engine saw: request counts and the figures vLLM's scheduler reported."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VLLMStats", "stat_logger_factory"]


@dataclass
class VLLMStats:
    """What the engine saw: requests, concurrency and what vLLM's scheduler reported.

    ``max_in_flight`` counts requests this engine had submitted and not yet seen finish;
    ``max_running`` is the largest number of requests vLLM's scheduler ran in one step
    (continuous batching at work); ``max_finished_per_step`` the most requests finished by
    one step (pooling requests such as ICR's finish in the step that runs them);
    ``prefix_cache_hits``/``prefix_cache_queries`` are tokens.
    The scheduler figures stay 0 with vLLM versions whose stat-logger interface differs.
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    max_running: int = 0
    max_finished_per_step: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def started(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1


def stat_logger_factory(stats: VLLMStats) -> Any:
    """A vLLM ``StatLoggerFactory`` that copies scheduler figures into ``stats`` (or ``None``)."""
    try:
        from vllm.v1.metrics.loggers import StatLoggerBase
    except ImportError:  # pragma: no cover - other vLLM layouts
        return None

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if iteration_stats is not None:
                finished = len(getattr(iteration_stats, "finished_requests", ()) or ())
                stats.max_finished_per_step = max(stats.max_finished_per_step, finished)
            if scheduler_stats is None:
                return
            running = int(getattr(scheduler_stats, "num_running_reqs", 0) or 0)
            stats.max_running = max(stats.max_running, running)
            prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
            if prefix is not None:
                stats.prefix_cache_queries += int(getattr(prefix, "queries", 0) or 0)
                stats.prefix_cache_hits += int(getattr(prefix, "hits", 0) or 0)

        def log_engine_initialized(self) -> None:
            return None

    return _Recorder
