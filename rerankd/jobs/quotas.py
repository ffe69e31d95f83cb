"""Per-key quotas and the queue lanes that keep one tenant from starving the others.

Quotas (settings ``quota_*`` and per-key ``quotas``, see :mod:`rerankd.config`), checked by the
job creation scripts atomically with the creation (one round trip, ``lua/quotas.lua``):

``jobs_in_flight``        sync reranks and jobs of a key that are queued or running: a sorted set
                          per key (``{prefix}:q:inflight:{key}``) that gains the job at creation
                          and loses it at its terminal transition (``lua/counters.lua``), scored
                          by when its record expires, so a record that expires unfinished stops
                          counting; never a scan.
``batch_jobs_in_flight``  the same for batch jobs (a batch is refused whole if it would pass it).
``requests_per_minute``   reranks, jobs and batches created per fixed minute of the Redis clock.
``documents_per_minute``  documents of sync reranks and jobs created per minute (batches are
                          bounded by ``batch_jobs_in_flight`` and run on the batch lane instead).

A refused request gets 429 with ``Retry-After``: the seconds left in the current minute for the
rates, the service's ``retry_after_s`` for jobs in flight (they free up as jobs finish).

Lanes: every model has one broker queue; kombu's Redis transport keeps a list per priority step
(``queue``, ``queue\\x06\\x163``, ``...6``, ``...9``) and a worker's BRPOP asks them in that order,
so a lower lane is served only when the lanes above it are empty (strict priority).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rerankd.config import QuotaOverride, Settings
from rerankd.jobs.keys import PRIORITY_SEP as PRIORITY_SEP  # re-exported: lanes are described here
from rerankd.jobs.keys import lane_key as lane_key

INTERACTIVE = 0
"""Lane of sync reranks and jobs (Cohere ``priority`` 0, the default)."""
LOW = 6
"""Lane of sync reranks and jobs sent with a Cohere ``priority`` above 0."""
BATCH = 9
"""Lane of batch jobs: served only when no interactive work waits."""
LANES = (INTERACTIVE, LOW, BATCH)
LANE_NAMES = {INTERACTIVE: "interactive", LOW: "low", BATCH: "batch"}
MAX_COHERE_PRIORITY = 999


def cohere_lane(priority: int | None) -> int:
    """The lane of a Cohere request: ``priority`` 0 (highest, Cohere's default) runs on the
    interactive lane, 1-999 on the low lane (still before batches)."""
    if priority is None or priority == 0:
        return INTERACTIVE
    if not 0 <= priority <= MAX_COHERE_PRIORITY:
        raise ValueError(f"priority must be between 0 and {MAX_COHERE_PRIORITY}, got {priority}")
    return LOW


SETTING_OF = {
    "jobs_in_flight": "RERANKD_QUOTA_JOBS_IN_FLIGHT",
    "batch_jobs_in_flight": "RERANKD_QUOTA_BATCH_JOBS_IN_FLIGHT",
    "requests_per_minute": "RERANKD_QUOTA_REQUESTS_PER_MINUTE",
    "documents_per_minute": "RERANKD_QUOTA_DOCUMENTS_PER_MINUTE",
}


@dataclass(frozen=True)
class Quota:
    """What one creation asks of a key's quotas."""

    owner: str
    limits: QuotaOverride
    documents: int
    jobs: int = 1
    batch: bool = False

    @classmethod
    def of(cls, settings: Settings, owner: str, documents: int, jobs: int = 1, batch: bool = False) -> Quota:
        return cls(owner, settings.quota_for(owner), documents, jobs, batch)

    def script_args(self, prefix: str) -> list[Any]:
        """ARGV of ``quota_check``/``quota_take`` (``lua/quotas.lua``)."""
        lim = self.limits
        in_flight = lim.batch_jobs_in_flight if self.batch else lim.jobs_in_flight
        return [
            prefix,
            f"{self.owner}|batch" if self.batch else self.owner,
            in_flight or 0,
            self.jobs,
            self.owner,
            lim.requests_per_minute or 0,
            0 if self.batch else (lim.documents_per_minute or 0),
            0 if self.batch else self.documents,
        ]

    def limit_value(self, name: str) -> int:
        if name == "jobs_in_flight" and self.batch:
            name = "batch_jobs_in_flight"
        return int(getattr(self.limits, name) or 0)

    def precheck(self) -> tuple[str, str] | None:
        """``(limit, message)`` when this request alone is over a limit (waiting cannot help)."""
        dpm = self.limits.documents_per_minute or 0
        if not self.batch and dpm and self.documents > dpm:
            return "documents_per_minute", (
                f"documents: {self.documents} documents exceed the per-minute quota of {dpm} of key "
                f"{self.owner!r} ({self._setting('documents_per_minute')}); send fewer documents per request"
            )
        cap = self.limit_value("jobs_in_flight")
        if self.batch and cap and self.jobs > cap:
            return "batch_jobs_in_flight", (
                f"batch: {self.jobs} jobs exceed the quota of {cap} batch jobs in flight of key "
                f"{self.owner!r} ({self._setting('batch_jobs_in_flight')}); split the batch"
            )
        return None

    def _setting(self, name: str) -> str:
        return f"{SETTING_OF[name]} or RERANKD_QUOTAS[{self.owner!r}].{name}"

    def message(self, limit: str, current: int, retry_after_s: float) -> str:
        """The 429 message: which limit, its setting and value, when to retry."""
        name = "batch_jobs_in_flight" if limit == "jobs_in_flight" and self.batch else limit
        value = self.limit_value(limit)
        what = {
            "jobs_in_flight": f"{current} jobs queued or running, this request adds {self.jobs}",
            "batch_jobs_in_flight": f"{current} batch jobs not finished, this batch adds {self.jobs}",
            "requests_per_minute": f"{current} requests this minute",
            "documents_per_minute": f"{current} documents this minute, this request adds {self.documents}",
        }[name]
        return (
            f"quota exceeded for key {self.owner!r}: {name} is {value} ({self._setting(name)}); "
            f"{what}; retry in {retry_seconds(retry_after_s)} s"
        )


def retry_seconds(retry_after_s: float) -> int:
    """Whole seconds for a ``Retry-After`` header (never 0)."""
    return max(1, math.ceil(retry_after_s - 1e-6))
