"""The job record as stored in Redis, its statuses and ids."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from rerankd.types import RerankRequest, RerankResult

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})
ACTIVE: frozenset[str] = frozenset({"queued", "running"})

ErrorCode = Literal["invalid_request", "deadline_exceeded", "engine_error", "worker_lost", "cancelled", "expired"]


def new_id(kind: str = "job") -> str:
    """A random, URL-safe id such as ``job_3f9c...``."""
    return f"{kind}_{secrets.token_hex(12)}"


def body_hash(body: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _f(v: bytes | str | None) -> float | None:
    if v is None or v in (b"", ""):
        return None
    return float(v)


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    s = v.decode("utf-8") if isinstance(v, bytes) else v
    return s or None


class JobRecord(BaseModel):
    """A job as stored (decoded)."""

    id: str
    status: JobStatus
    owner: str
    kind: str = "job"
    model: str
    queue: str
    strategy: str
    request: RerankRequest | None = None
    result: RerankResult | None = None
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    worker: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    deadline_s: float
    cancel_requested: bool = False
    callback_url: str | None = None
    callback_status: str | None = None
    batch_id: str | None = None
    custom_id: str | None = None

    @classmethod
    def from_hash(cls, h: Mapping[bytes, bytes] | Mapping[str, str], with_request: bool = True) -> JobRecord:
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in h.items()}
        req = _s(d.get("request")) if with_request else None
        res = _s(d.get("result"))
        return cls(
            id=_s(d["id"]) or "",
            status=_s(d["status"]),  # type: ignore[arg-type]
            owner=_s(d.get("owner")) or "",
            kind=_s(d.get("kind")) or "job",
            model=_s(d.get("model")) or "",
            queue=_s(d.get("queue")) or "",
            strategy=_s(d.get("strategy")) or "",
            request=RerankRequest.model_validate_json(req) if req else None,
            result=RerankResult.model_validate_json(res) if res else None,
            error=_s(d.get("error")),
            error_code=_s(d.get("error_code")),
            attempts=int(_f(d.get("attempts")) or 0),
            max_attempts=int(_f(d.get("max_attempts")) or 1),
            worker=_s(d.get("worker")),
            created_at=_f(d.get("created_at")) or 0.0,
            started_at=_f(d.get("started_at")),
            finished_at=_f(d.get("finished_at")),
            expires_at=_f(d.get("expires_at")),
            deadline_s=_f(d.get("deadline_s")) or 0.0,
            cancel_requested=_s(d.get("cancel_requested")) == "1",
            callback_url=_s(d.get("callback_url")),
            callback_status=_s(d.get("callback_status")),
            batch_id=_s(d.get("batch_id")),
            custom_id=_s(d.get("custom_id")),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class CreateResult:
    """``quota``: a per-key limit (``limit``, see :mod:`rerankd.jobs.quotas`) stood at ``current``;
    ``retry_after_s`` is when its window ends (``None``: when jobs finish)."""

    outcome: Literal["created", "existing", "conflict", "full", "quota"]
    job_id: str
    limit: str = ""
    current: int = 0
    retry_after_s: float | None = None


@dataclass(frozen=True)
class ClaimResult:
    """What a worker got when it tried to claim a job."""

    outcome: Literal["claimed", "busy", "done", "missing", "expired", "exhausted", "cancelled"]
    attempt: int = 0
    retry_in: float = 0.0
    request: RerankRequest | None = None
    deadline_s: float = 0.0
    created_at: float = 0.0
    started_at: float = 0.0
    model: str = ""
    strategy: str = ""
    callback_url: str | None = None
