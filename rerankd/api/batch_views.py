"""Batch answers that cost the same whatever the batch size: the status from the counters the job
scripts keep in the batch record, and the results as JSONL streamed page by page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from rerankd.jobs import TERMINAL, JobStore
from rerankd.jobs.batches import BatchStore

PAGE = 500
"""Jobs read from Redis per round trip while streaming results."""


def batch_status(batch_id: str, info: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/batches/{id}``: status and counts by job status (a job whose record expired
    still counts under its last status)."""
    counts = BatchStore.counts(info)
    total = int(info.get("total", "0"))
    done = sum(counts[s] for s in TERMINAL)
    return {
        "id": batch_id,
        "object": "batch",
        "status": BatchStore.state(info),
        "created_at": float(info.get("created_at", 0)),
        "total": total,
        "finished": done,
        "counts": counts,
    }


def _s(v: bytes | None) -> str | None:
    return v.decode() if v else None


def result_line(job_id: str, row: list[bytes | None]) -> bytes:
    """One JSONL line: ``{custom_id, response}`` or ``{custom_id, error}`` (the stored result
    JSON is copied as is, not decoded)."""
    custom_id, status, result, error, code = row
    if status is None:
        return (
            json.dumps(
                {"custom_id": None, "error": {"code": "expired", "message": f"job {job_id} has expired"}}
            ).encode()
            + b"\n"
        )
    if status == b"succeeded" and result:
        return b'{"custom_id":' + json.dumps(_s(custom_id)).encode() + b',"response":' + result + b"}\n"
    st = status.decode()
    body = {"custom_id": _s(custom_id), "error": {"code": _s(code) or st, "message": _s(error) or st}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


async def result_stream(store: JobStore, batch_id: str, start: int, stop: int) -> AsyncIterator[bytes]:
    """Lines ``start .. stop - 1`` of a batch's results, read ``PAGE`` jobs at a time."""
    pos = start
    while pos < stop:
        ids = await store.batches.item_ids(batch_id, pos, min(PAGE, stop - pos))
        if not ids:
            return
        rows = await store.batches.result_rows(ids)
        yield b"".join(result_line(j, r) for j, r in zip(ids, rows, strict=True))
        pos += len(ids)
