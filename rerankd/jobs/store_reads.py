"""The job store's reads: records, histories, lane depths, listings and metrics (no transitions;
those are :class:`rerankd.jobs.store.JobStore`'s scripts)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rerankd.jobs import listing
from rerankd.jobs.keys import Keys
from rerankd.jobs.metrics import COUNTERS, HISTOGRAMS, MetricsWriter
from rerankd.jobs.quotas import LANES
from rerankd.jobs.record import JobRecord, _s

if TYPE_CHECKING:
    from rerankd.jobs.relay import BrokerOutbox

__all__ = ["StoreReads"]

_BUT_REQUEST = [name.encode() for name in JobRecord.model_fields if name != "request"]
"""The hash fields :meth:`StoreReads.get` reads when the request is not wanted."""


class StoreReads:
    """Read access to the records and counters the job scripts write (a part of ``JobStore``)."""

    r: Any
    keys: Keys
    prefix: str
    broker_outbox: BrokerOutbox | None

    # ------------------------------------------------------------------ keys

    def job_key(self, job_id: str) -> str:
        return self.keys.job(job_id)

    def log_key(self, job_id: str) -> str:
        return self.keys.log(job_id)

    def idem_key(self, owner: str, key: str) -> str:
        return self.keys.idem(owner, key)

    async def get(self, job_id: str, with_request: bool = True) -> JobRecord | None:
        """The job, or ``None``; ``with_request=False`` leaves ``request`` unset (cheaper: the
        request, the largest field, is not even read)."""
        if with_request:
            h = await self.r.hgetall(self.job_key(job_id))
        else:
            values = await self.r.hmget(self.job_key(job_id), _BUT_REQUEST)
            h = {k: v for k, v in zip(_BUT_REQUEST, values, strict=True) if v is not None}
        if not h or b"status" not in h:
            return None
        return JobRecord.from_hash(h, with_request)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        pipe = self.r.pipeline(transaction=False)
        for j in job_ids:
            pipe.hgetall(self.job_key(j))
        rows = await pipe.execute()
        return [JobRecord.from_hash(h) if h and b"status" in h else None for h in rows]

    async def statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        pipe = self.r.pipeline(transaction=False)
        for j in job_ids:
            pipe.hget(self.job_key(j), "status")
        return [_s(s) for s in await pipe.execute()]

    async def history(self, job_id: str) -> list[str]:
        """The job's transitions, oldest first (``"<time> <event> ..."``)."""
        return [x.decode() for x in await self.r.lrange(self.log_key(job_id), 0, -1)]

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue``'s interactive lane (RabbitMQ: jobs waiting there)."""
        return (await self.lane_depths([queue]))[queue][LANES[0]]

    async def lane_depths(self, queues: Sequence[str]) -> dict[str, dict[int, int]]:
        """Messages waiting per queue and lane (:data:`~rerankd.jobs.quotas.LANES`), one pipeline.
        With RabbitMQ, which counts a queue's messages but not its lanes', the jobs waiting in each
        lane (``{prefix}:waiting``, kept by the job scripts)."""
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            for lane in LANES:
                if self.broker_outbox is not None:
                    pipe.zcount(self.keys.waiting(q, lane), time.time(), "+inf")
                else:
                    pipe.llen(self.keys.lane(q, lane))
        lengths = iter(await pipe.execute())
        return {q: {lane: max(0, int(next(lengths) or 0)) for lane in LANES} for q in queues}

    async def finished_per_minute(self, minutes: Sequence[int]) -> list[int]:
        """Jobs that reached a final status in each minute (Unix time // 60; kept 20 minutes)."""
        done = await self.r.mget([self.keys.throughput(m) for m in minutes]) if minutes else []
        return [int(d or 0) for d in done]

    # ------------------------------------------------------------------ listings

    async def list_jobs(
        self, owner: str, filters: listing.Filters, after: listing.Position | None, limit: int
    ) -> tuple[list[JobRecord], listing.Position | None]:
        """A page of ``owner``'s jobs, newest first, from ``after`` (:mod:`rerankd.jobs.listing`)."""
        return await listing.list_jobs(self, owner, filters, after, limit)

    async def list_batches(
        self, owner: str, filters: listing.Filters, after: listing.Position | None, limit: int
    ) -> tuple[list[tuple[str, dict[str, str]]], listing.Position | None]:
        """A page of ``owner``'s batches ``(id, info)``, newest first, from ``after``."""
        return await listing.list_batches(self, owner, filters, after, limit)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> MetricsWriter:
        return MetricsWriter(self.keys)

    async def flush_metrics(self, metrics: MetricsWriter) -> None:
        if not metrics.ops:
            return
        pipe = self.r.pipeline(transaction=False)
        metrics.apply(pipe)
        await pipe.execute()

    async def read_metrics(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """``(counters, histograms)``: ``{name: {field: value}}`` as written by :class:`MetricsWriter`,
        for the registered names (one pipeline, no scan)."""
        rows = await self.read_metric_hashes([*(f"c:{n}" for n in COUNTERS), *(f"h:{n}" for n in HISTOGRAMS)])
        out_c = {n: rows[f"c:{n}"] for n in COUNTERS if rows[f"c:{n}"]}
        out_h = {n: rows[f"h:{n}"] for n in HISTOGRAMS if rows[f"h:{n}"]}
        return out_c, out_h

    async def in_flight(self) -> dict[str, int]:
        """Jobs queued or running per owner (``owner|batch``: its batch jobs), as the quotas count
        them (``lua/counters.lua``): O(owners)."""
        owners = sorted(o.decode() for o in await self.r.smembers(self.keys.inflight_owners))
        if not owners:
            return {}
        sec, usec = await self.r.time()
        now = float(sec) + float(usec) / 1e6
        pipe = self.r.pipeline(transaction=False)
        for o in owners:
            pipe.zcount(self.keys.inflight(o), now, "+inf")
        return {o: int(n) for o, n in zip(owners, await pipe.execute(), strict=True)}

    async def read_metric_hashes(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{name: {field: value}}`` of the hashes ``{prefix}:m:{name}`` (``name`` such as
        ``c:jobs_submitted_total``, ``g:jobs_by_status``)."""
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(self.keys.metric(n))
        return {
            n: {f.decode(): float(v) for f, v in row.items()}
            for n, row in zip(names, await pipe.execute(), strict=True)
        }
