"""How stored records look to tenants: jobs, batches and batch result lines.

Plain functions over :class:`rerankd.jobs.JobRecord`, used by the API's routes and by the
worker's webhook dispatcher, so a callback carries exactly what ``GET /v1/jobs/{id}`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rerankd.jobs.record import TERMINAL, JobRecord
from rerankd.jobs.redact import redact, redact_history, worker_ref

__all__ = ["batch_result_line", "batch_view", "history_view", "job_view", "public_error"]

BATCH_COUNTS = ("queued", "running", "succeeded", "failed", "cancelled", "expired")


def public_error(record: JobRecord) -> str | None:
    """The job's error text as tenants see it: no URLs, addresses or worker host names."""
    if record.error is None:
        return None
    host = record.worker.rsplit(":", 1)[0].rsplit("@", 1)[-1] if record.worker else ""
    return redact(record.error, [host])


def history_view(lines: Sequence[str]) -> list[str]:
    """A job's history with workers as opaque ids."""
    return [redact_history(line) for line in lines]


def job_view(record: JobRecord, include_request: bool = False) -> dict[str, Any]:
    """The job as the API shows it (``worker``: an opaque id; ``error``: redacted)."""
    out: dict[str, Any] = {
        "id": record.id,
        "object": "job",
        "status": record.status,
        "model": record.model,
        "strategy": record.strategy,
        "attempts": record.attempts,
        "worker": worker_ref(record.worker),
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "cancel_requested": record.cancel_requested,
        "result": record.result.model_dump(mode="json") if record.result is not None else None,
        "error": ({"code": record.error_code, "message": public_error(record)} if record.error is not None else None),
    }
    if record.callback_url is not None:
        out["callback_url"] = record.callback_url
        out["callback_status"] = record.callback_status
    if record.batch_id is not None:
        out["batch_id"] = record.batch_id
        out["custom_id"] = record.custom_id
    if include_request and record.request is not None:
        out["request"] = record.request.model_dump(mode="json")
    return out


def batch_view(batch_id: str, meta: Mapping[str, str], statuses: Sequence[str | None]) -> dict[str, Any]:
    """A batch's status and counts by job status (``None``: the job's record has expired)."""
    counts = dict.fromkeys(BATCH_COUNTS, 0)
    for st in statuses:
        counts[st or "expired"] = counts.get(st or "expired", 0) + 1
    done = sum(counts[s] for s in TERMINAL)
    return {
        "id": batch_id,
        "object": "batch",
        "status": "completed" if done == len(statuses) else "in_progress",
        "created_at": float(meta.get("created_at", 0)),
        "total": len(statuses),
        "finished": done,
        "counts": counts,
    }


def batch_result_line(job_id: str, record: JobRecord | None) -> dict[str, Any]:
    """One line of a batch's results: ``{custom_id, response}`` or ``{custom_id, error}``."""
    if record is None:
        return {"custom_id": None, "error": {"code": "expired", "message": f"job {job_id} has expired"}}
    if record.status == "succeeded" and record.result is not None:
        return {"custom_id": record.custom_id, "response": record.result.model_dump(mode="json")}
    return {
        "custom_id": record.custom_id,
        "error": {"code": record.error_code or record.status, "message": public_error(record) or record.status},
    }
