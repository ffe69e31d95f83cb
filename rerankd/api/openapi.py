"""The OpenAPI document: every status code a route can answer, with the error shape, and the
batch body's schemas.

Routes declare their errors with :func:`errors`; :func:`install` drops FastAPI's default 422
(``HTTPValidationError``, a shape this server never sends) and adds the schemas of a batch line.
Request and response models live in :mod:`rerankd.api.schemas`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rerankd.api.errors import ErrorBody
from rerankd.api.schemas import BatchLineDoc

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
