"""The job layer shared by the API and the worker: the Redis job store and its state machine
(:mod:`.store`, Lua scripts in ``lua/``), the record (:mod:`.record`), batches, worker heartbeats
and metrics counters."""

from rerankd.jobs.batches import BatchStore
from rerankd.jobs.metrics import HISTOGRAMS, MetricsWriter
from rerankd.jobs.record import (
    ACTIVE,
    TERMINAL,
    ClaimResult,
    CreateResult,
    ErrorCode,
    JobRecord,
    JobStatus,
    body_hash,
    new_id,
)
from rerankd.jobs.store import JobStore, StoreUnavailable
from rerankd.jobs.workers import WorkerRegistry

__all__ = [
    "ACTIVE",
    "HISTOGRAMS",
    "TERMINAL",
    "BatchStore",
    "ClaimResult",
    "CreateResult",
    "ErrorCode",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "MetricsWriter",
    "StoreUnavailable",
    "WorkerRegistry",
    "body_hash",
    "new_id",
]
