"""``BatchService``: batches for an owner, atomic and paged (used by :mod:`rerankd.api.routers.batches`).

* Creation is one Redis script (:meth:`rerankd.jobs.batches.BatchStore.submit`): every job on
  the batch lane of its strategy's queue (:mod:`rerankd.jobs.routing`), the batch record and the
  counters, or nothing.  It respects the queue depth of each queue it uses
  (``RERANKD_MAX_QUEUE_DEPTH`` of the interactive lane, ``RERANKD_MAX_BATCH_QUEUE_DEPTH`` of the
  batch lane) and the key's quotas, and takes an ``Idempotency-Key`` (same key and file:
  the same batch; another file: 409).
* Status reads the counters of the batch record; results stream page by page with a cursor.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from rerankd.api import batch_views
from rerankd.api.admission import Admission, Ask, NewJob, check_custom_id
from rerankd.api.body import MAX_INT_DIGITS, integer_message, long_integer
from rerankd.api.creation import JobCreator
from rerankd.api.errors import ApiError, LimitError, validation_message
from rerankd.api.schemas import BatchBody, BatchLine
from rerankd.config import Settings
from rerankd.jobs import JobStore, new_id
from rerankd.jobs.quotas import BATCH

MAX_RESULTS_LIMIT = 100_000


class BatchService:
    """Create, read, cancel and page through the batches of an owner."""

    def __init__(self, settings: Settings, store: JobStore, admission: Admission) -> None:
        self.settings = settings
        self.store = store
        self.admission = admission
        self.creator = JobCreator(settings, store)

    def parse(self, owner: str, batch_id: str, raw: bytes, model: str | None) -> list[NewJob]:
        """The new jobs of a JSONL batch file, each line admitted like a job; 413/422 naming the line."""
        lines = [(n, line) for n, line in enumerate(_decode_lines(raw), 1) if line.strip()]
        if not lines:
            raise ApiError(422, "the batch file has no lines", field="body")
        limit = self.settings.max_batch_lines
        if len(lines) > limit:
            raise LimitError.over(413, "batch", len(lines), "lines", limit, "RERANKD_MAX_BATCH_LINES")
        jobs: list[NewJob] = []
        seen: set[str] = set()
        for n, text in lines:
            where = f"line {n}: "
            long = long_integer(text)
            if long is not None:
                raise ApiError(
                    422, where + integer_message(*long), code="over_limit", field=f"line {n}", limit=MAX_INT_DIGITS
                )
            try:
                line = BatchLine.model_validate_json(text)
                body = BatchBody.model_validate(line.body)
            except ValidationError as e:
                raise ApiError(422, f"{where}{validation_message(e.errors())}", field=f"line {n}") from None
            check_custom_id(self.settings, line.custom_id, where)
            if line.custom_id in seen:
                raise ApiError(422, f"{where}custom_id {line.custom_id!r} is duplicated", field=f"line {n}")
            seen.add(line.custom_id)
            admitted = self.admission.check(Ask.of(body, model, priority=BATCH), where=where)
            jobs.append(self.admission.job(owner, admitted, "batch", batch_id=batch_id, custom_id=line.custom_id))
        return jobs

    async def create(
        self, owner: str, raw: bytes, model: str | None, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """``POST /v1/batches``: ``(batch status, replayed)``."""
        idem = None
        key = self.admission.idempotency_key(idempotency_key)
        if key:
            digest = hashlib.sha256(raw + b"\0" + (model or "").encode()).hexdigest()
            idem = (key, digest)
        batch_id = new_id("batch")
        # parsing 10,000 lines takes seconds of CPU: off the event loop, so other requests go on
        jobs = await asyncio.to_thread(self.parse, owner, batch_id, raw, model)
        # batch documents are not rate-limited: batches have their in-flight quota and their lane
        quota = self.admission.quota(owner, documents=0, jobs=len(jobs), batch=True)
        created = await self.store.batches.submit(
            batch_id,
            owner,
            [(job.id, job.fields, job.message) for job in jobs],
            {
                "created_at": f"{time.time():.6f}",
                # for GET /v1/batches filters (rerankd.api.listing)
                "models": ",".join(sorted({job.fields["model"] for job in jobs})),
                "strategies": ",".join(sorted({job.fields["strategy"] for job in jobs})),
            },
            ttl_s=self.settings.job_ttl_s,
            idem_key=self.store.keys.batch_idem(owner, idempotency_key),
            idempotency=idem,
            max_depth=self.settings.max_queue_depth,
            max_batch_depth=self.settings.max_batch_queue_depth,
            quota=quota,
        )
        if created.outcome == "quota":
            raise await self.creator.quota_error(quota, created)
        if created.outcome == "conflict":
            raise ApiError(
                409,
                f"Idempotency-Key {idempotency_key!r} was already used with a different batch file "
                f"(batch {created.job_id})",
                code="idempotency_key_reused",
                field="Idempotency-Key",
            )
        if created.outcome == "full":
            lane = created.job_id
            which = (
                f"the batch lane of {lane.split(chr(6))[0]} would exceed RERANKD_MAX_BATCH_QUEUE_DEPTH="
                f"{self.settings.max_batch_queue_depth} with {len(jobs)} more jobs"
                if "\x06" in lane
                else f"queue {lane} is full (RERANKD_MAX_QUEUE_DEPTH={self.settings.max_queue_depth})"
            )
            await self.creator.metric("jobs_rejected_total", {"reason": "queue_full", "model": "batch"})
            raise self.creator.unavailable(f"batch refused: {which}; retry later")
        if created.outcome == "existing":
            info = await self.store.batches.info(created.job_id)
            if info is None:
                raise ApiError(
                    404, f"batch {created.job_id} of this Idempotency-Key has expired", code="idempotency_key_expired"
                )
            return batch_views.batch_status(created.job_id, info), True
        counts = Counter((job.fields["model"], job.fields["strategy"]) for job in jobs)
        m = self.store.metrics()
        for (mod, strategy), n in counts.items():
            m.inc("jobs_submitted_total", {"kind": "batch", "model": mod, "strategy": strategy}, n)
        await self.store.flush_metrics(m)
        return await self.status(batch_id, owner), False

    async def _owned(self, batch_id: str, owner: str) -> dict[str, str]:
        info = await self.store.batches.info(batch_id)
        if info is None or info.get("owner") != owner:
            raise ApiError(404, f"no batch {batch_id!r}", code="not_found")
        return info

    async def status(self, batch_id: str, owner: str) -> dict[str, Any]:
        """``GET /v1/batches/{id}``: status and counts by job status (one read)."""
        return batch_views.batch_status(batch_id, await self._owned(batch_id, owner))

    async def cancel(self, batch_id: str, owner: str) -> dict[str, Any]:
        """Cancel every job of a batch that has not finished (a page of jobs at a time)."""
        info = await self._owned(batch_id, owner)
        total = int(info.get("total", "0"))
        for start in range(0, total, batch_views.PAGE):
            ids = await self.store.batches.item_ids(batch_id, start, batch_views.PAGE)
            for i in range(0, len(ids), 50):
                await asyncio.gather(*(self.store.cancel(j, owner) for j in ids[i : i + 50]))
        return await self.status(batch_id, owner)

    async def results(
        self, batch_id: str, owner: str, cursor: int = 0, limit: int | None = None
    ) -> tuple[AsyncIterator[bytes], int | None]:
        """``(JSONL stream of lines cursor .. cursor + limit - 1, next cursor or None)``;
        409 while the batch is in progress."""
        if cursor < 0:
            raise ApiError(422, f"cursor must be >= 0, got {cursor}", field="cursor")
        if limit is not None and not 1 <= limit <= MAX_RESULTS_LIMIT:
            raise ApiError(422, f"limit must be between 1 and {MAX_RESULTS_LIMIT}, got {limit}", field="limit")
        info = await self._owned(batch_id, owner)
        status = batch_views.batch_status(batch_id, info)
        if status["status"] != "completed":
            raise ApiError(
                409,
                f"batch {batch_id} is in progress: {status['finished']} of {status['total']} jobs finished",
                code="in_progress",
            )
        total = status["total"]
        stop = total if limit is None else min(total, cursor + limit)
        return batch_views.result_stream(self.store, batch_id, cursor, stop), (stop if stop < total else None)


def _decode_lines(raw: bytes) -> list[str]:
    """The lines of a UTF-8 file; 422 naming the first line that is not UTF-8."""
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ApiError(
                422,
                f"line {n}: not UTF-8 (byte {e.start + 1} of the line); batch files must be UTF-8 JSONL",
                field=f"line {n}",
                code="invalid_encoding",
            ) from None
    return out
