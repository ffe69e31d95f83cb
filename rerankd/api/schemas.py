"""The API's schemas: request bodies of our own endpoints (Cohere's request shape is in
:mod:`rerankd.api.cohere`, the error body in :mod:`rerankd.api.errors`) and the response models
the routes declare (``response_model=``), so every answer is validated by the model the OpenAPI
document shows.  Views (:mod:`rerankd.jobs.views`) build the dicts these models check."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rerankd.types import RerankRequest, RerankResult, StrategyConfig
from rerankd.webhooks.egress import EgressError, parse_callback_url

__all__ = [
    "THROUGHPUT_MINUTES",
    "BatchBody",
    "BatchLine",
    "BatchLineDoc",
    "BatchListOut",
    "BatchOut",
    "BatchSummaryOut",
    "CapabilityQueueOut",
    "CohereRerankOut",
    "CohereResult",
    "ErrorItem",
    "HealthOut",
    "JobCreate",
    "JobListOut",
    "JobOut",
    "JobSummaryOut",
    "MinuteOut",
    "ModelOut",
    "ModelsOut",
    "QueueOut",
    "QueuesOut",
    "WorkerOut",
    "our_request",
]

THROUGHPUT_MINUTES = 10
"""Minutes of finished-jobs throughput ``GET /v1/queues`` shows."""


class JobCreate(RerankRequest):
    """``POST /v1/jobs``: our rerank request plus where and how to run it."""

    model: str | None = None
    callback_url: str | None = None
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        """Syntax only (http(s), no credentials, a valid host); the egress policy, which needs
        the settings and DNS, runs in the service (:func:`rerankd.webhooks.admission.check_callback`)."""
        if v is not None:
            try:
                parse_callback_url(v)
            except EgressError as e:
                raise ValueError(str(e)) from None
        return v


class BatchLine(BaseModel):
    """One line of a batch file (OpenAI-batch style; ``method``/``url`` are ignored)."""

    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1)
    body: dict[str, Any]


class BatchBody(RerankRequest):
    """The ``body`` of a batch line: our rerank request and an optional ``model``."""

    model: str | None = None


def our_request(body: RerankRequest, default_strategy: StrategyConfig) -> RerankRequest:
    """``body`` as a plain :class:`RerankRequest`; the model's strategy unless the body names one."""
    return RerankRequest(
        query=body.query,
        candidates=body.candidates,
        strategy=body.strategy if "strategy" in body.model_fields_set else default_strategy,
        top_n=body.top_n,
        feedback=body.feedback,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )


# --------------------------------------------------------------------------- responses


class BatchLineDoc(BaseModel):
    """One line of a batch file."""

    custom_id: str = Field(min_length=1, description="Your id for the line; unique in the file.")
    body: BatchBody


class ErrorItem(BaseModel):
    code: str | None
    message: str | None


_CALLBACK_STATUS = "Delivery of the callback: `retrying`, `delivered` or `failed` (null: not yet attempted)."


class JobOut(BaseModel):
    """A job as ``GET /v1/jobs/{id}`` shows it."""

    id: str
    object: Literal["job"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    model: str
    strategy: str
    attempts: int
    worker: str | None = Field(description="An opaque id of the worker that ran the job last.")
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    result: RerankResult | None
    error: ErrorItem | None
    history: list[str] | None = None
    callback_url: str | None = Field(default=None, description="Jobs created with a `callback_url` only.")
    callback_status: str | None = Field(default=None, description=_CALLBACK_STATUS)
    batch_id: str | None = Field(default=None, description="Jobs of a batch only.")
    custom_id: str | None = Field(default=None, description="Jobs of a batch only: the line's `custom_id`.")
    request: dict[str, Any] | None = Field(default=None, description="With `?include=request`: the request run.")


class JobSummaryOut(BaseModel):
    """A job in a listing: as ``GET /v1/jobs/{id}`` without ``result``."""

    id: str
    object: Literal["job"]
    kind: str = Field(description="`job` (POST /v1/jobs) or `rerank` (synchronous rerank routes).")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
    model: str
    strategy: str
    attempts: int
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    documents: int | None = Field(description="Candidates in the request.")
    warnings: int = Field(description="Warnings of the result (repaired outputs, truncations).")
    error: ErrorItem | None
    callback_url: str | None = Field(default=None, description="Jobs created with a `callback_url` only.")
    callback_status: str | None = Field(default=None, description=_CALLBACK_STATUS)


class JobListOut(BaseModel):
    object: Literal["list"]
    data: list[JobSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    has_more: bool


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"]
    status: Literal["in_progress", "completed"]
    created_at: float
    total: int
    finished: int
    counts: dict[str, int]


class BatchSummaryOut(BatchOut):
    models: list[str]
    strategies: list[str]


class BatchListOut(BaseModel):
    object: Literal["list"]
    data: list[BatchSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    has_more: bool


class CohereResult(BaseModel):
    index: int
    relevance_score: float = Field(
        description="P(relevant) when the worker has a calibration for the model, strategy and settings "
        "(meta.relevance.kind = calibrated); else 1 - (rank - 1) / n for the document's final rank among the n "
        "documents sent: 1.0 for the best, independent of top_n (a position, not a probability; "
        "meta.relevance.kind = rank). See docs/calibration.md."
    )
    document: dict[str, Any] | None = None
    raw_score: float | None = Field(
        default=None, description="rerankd extension, with raw_scores: true: the strategy's own score."
    )


class CohereRerankOut(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict[str, Any]


class ModelOut(BaseModel):
    id: str
    object: Literal["model"]
    model: str
    strategy: dict[str, Any]


class ModelsOut(BaseModel):
    object: Literal["list"]
    data: list[ModelOut]


class HealthOut(BaseModel):
    """``ok`` or ``unavailable``; workers and queues only for callers with a key."""

    status: Literal["ok", "unavailable"]
    message: str | None = None
    code: str | None = None
    redis: str | None = None
    workers: list[dict[str, Any]] | None = None
    queues: dict[str, int] | None = None
    models_without_workers: list[str] | None = None
    unserved_strategies: dict[str, list[str]] | None = None


class CapabilityQueueOut(BaseModel):
    queue: str
    capability: str
    strategies: list[str]
    depth: dict[str, int]
    workers: int = Field(description="Live workers reading this queue.")


class QueueOut(BaseModel):
    model: str
    queue: str = Field(description="The model's generation queue (all its queues: `queues`).")
    depth: dict[str, int] = Field(description="Messages waiting by lane, summed over the model's queues.")
    queued: int
    running: int
    workers: int
    queues: list[CapabilityQueueOut]


class WorkerOut(BaseModel):
    id: str
    model: str
    engine: str
    strategies: list[str]
    queues: list[str]
    concurrency: int
    running: int
    done: int
    heartbeat_age_s: float | None
    up_s: float | None


class MinuteOut(BaseModel):
    minute: int = Field(description="Start of the minute (Unix time); the last one is the current, partial minute.")
    finished: int = Field(description="Jobs that reached a final status in that minute.")


class QueuesOut(BaseModel):
    time: float
    queues: list[QueueOut]
    workers: list[WorkerOut]
    finished: dict[str, dict[str, int]] = Field(description="Jobs finished so far, by model and status.")
    throughput: list[MinuteOut] = Field(description=f"The last {THROUGHPUT_MINUTES} minutes, oldest first.")
