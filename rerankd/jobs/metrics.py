"""Metric updates kept in Redis hashes (``{prefix}:m:*``), written by any process (API replicas,
workers), often atomically with a job transition, and read back by the API's ``/metrics``.

The metric names form a fixed registry (:data:`COUNTERS`, :data:`HISTOGRAMS`, :data:`GAUGES`):
``/metrics`` reads one hash per name, never scans the keyspace, so its cost does not grow with
the number of stored jobs.  A new metric must be registered here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rerankd.jobs.keys import Keys

COUNTERS: dict[str, str] = {
    "jobs_submitted_total": "Jobs accepted by the API, by kind (rerank, job, batch), model and strategy.",
    "jobs_finished_total": "Jobs that reached a final status, by status, model and strategy.",
    "jobs_rejected_total": "Requests refused before a job was created, by reason.",
    "jobs_redelivered_total": "Jobs claimed again after a worker was lost.",
    "llm_calls_total": "LLM calls made by finished jobs.",
    "prompt_tokens_total": "Prompt tokens of finished jobs.",
    "completion_tokens_total": "Completion tokens of finished jobs.",
    "parse_repairs_total": "Warnings (repaired LLM outputs, truncations) of finished jobs.",
}
"""Counter names (Redis hash ``{prefix}:m:c:{name}``, one field per label set) and their help."""

GAUGES: dict[str, str] = {
    "jobs_by_status": "Jobs queued or running, by model and status (kept by the job scripts).",
}
"""Gauges kept by the Lua scripts at every transition (``{prefix}:m:g:{name}``, ``lua/counters.lua``)."""

HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "job_queue_wait_seconds": (
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
    ),
    "job_run_seconds": (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    "job_documents": (1, 5, 10, 20, 50, 100, 200, 500, 1000),
}
"""Histogram names and their bucket upper bounds (``+Inf`` implied)."""


def _labels(labels: Mapping[str, str]) -> str:
    return _labels_of(tuple(sorted(labels.items())))


@lru_cache(maxsize=4096)
def _labels_of(items: tuple[tuple[str, str], ...]) -> str:
    # A few label sets (model, strategy, status) recur: serialised once, not ~10 times per job.
    return json.dumps(dict(items), separators=(",", ":"))


@dataclass
class MetricsWriter:
    """Accumulates metric updates and writes them in one pipeline (see :meth:`flush`)."""

    keys: Keys
    ops: list[tuple[str, str, str, float, bool]] = field(default_factory=list)

    def inc(self, name: str, labels: Mapping[str, str], value: int = 1) -> None:
        self.ops.append(("c", name, _labels(labels), value, False))

    def observe(self, name: str, labels: Mapping[str, str], value: float) -> None:
        bounds = HISTOGRAMS[name]
        idx = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
        lab = _labels(labels)
        self.ops.append(("h", name, f"{lab}|b{idx}", 1, False))
        self.ops.append(("h", name, f"{lab}|sum", value, True))
        self.ops.append(("h", name, f"{lab}|count", 1, False))

    def script_args(self, first_key: int) -> tuple[list[str], list[Any]]:
        """``(keys, args)`` that make a job script apply the updates (``apply_metrics``) when
        its transition happens; ``first_key`` is the 1-based index the keys will have."""
        keys: list[str] = []
        args: list[Any] = [len(self.ops)]
        for kind, name, fld, value, is_float in self.ops:
            key = self.keys.metric(f"{kind}:{name}")
            if key not in keys:
                keys.append(key)
            args += [first_key + keys.index(key), fld, "f" if is_float else "i", value if is_float else int(value)]
        self.ops.clear()
        return keys, args

    def apply(self, pipe: Any) -> None:
        """Queue the updates on a redis pipeline and forget them."""
        for kind, name, fld, value, is_float in self.ops:
            key = self.keys.metric(f"{kind}:{name}")
            if is_float:
                pipe.hincrbyfloat(key, fld, value)
            else:
                pipe.hincrby(key, fld, int(value))
        self.ops.clear()
