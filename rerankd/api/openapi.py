"""The OpenAPI document: every status code a route can answer, with the error shape, and the
batch body's schemas.

Routes declare their errors with :func:`errors`; :func:`install` drops FastAPI's default 422
(``HTTPValidationError``, a shape this server never sends) and adds the schemas of a batch line.
The ``*Out`` models document answers; routes build them as dicts (see :mod:`rerankd.jobs.views`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from rerankd.api.errors import ErrorBody
from rerankd.api.schemas import BatchBody
from rerankd.types import RerankResult

__all__ = ["BATCH_BODY", "errors", "install"]

_WHY = {
    401: "Missing or invalid API key.",
    404: "Unknown model, job or batch (or one of another owner).",
    409: "The job or batch is in a state that does not allow this.",
    413: "The body, or a list in it, is over a size limit (named in the message).",
    422: "Invalid request: the message names the field, header or batch line and the limit.",
    429: "A per-key quota is used up; retry after Retry-After seconds.",
    502: "The engine failed while running the job.",
    503: "Redis, the queue or the workers are unavailable, or the wait timed out; retry after Retry-After.",
    504: "The job ran past its deadline.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": _WHY[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


class BatchLineDoc(BaseModel):
    """One line of a batch file."""

    custom_id: str = Field(min_length=1, description="Your id for the line; unique in the file.")
    body: BatchBody


class ErrorItem(BaseModel):
    code: str | None
    message: str | None


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


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"]
    status: Literal["in_progress", "completed"]
    created_at: float
    total: int
    finished: int
    counts: dict[str, int]


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


BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A JSON Lines file (UTF-8): one `BatchLine` per line.",
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/BatchLineDoc"}},
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "The JSONL file."}},
                },
            },
        },
    }
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` build the document described above."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                default_422 = op.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(default_422):
                    del op["responses"]["422"]
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        extra = BatchLineDoc.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, schema in extra.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        schemas["BatchLineDoc"] = extra
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
