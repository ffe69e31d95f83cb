"""Every Redis key name rerankd uses, in one place (only :mod:`rerankd.jobs` builds keys).

All names start with the deployment's ``key_prefix`` (setting ``RERANKD_KEY_PREFIX``) except
the broker's own: a queue's list is named after the queue (kombu's Redis transport; queue names
come from :mod:`rerankd.jobs.routing`, which puts the prefix in them), with one list per
priority step (:func:`lane_key`), and kombu's ``unacked``/``unacked_index`` hashes.

Some Lua scripts build names from the prefix themselves, because which key they touch depends
on what they read (a job's owner, batch or model): ``lua/counters.lua`` (``m:g:jobs_by_status``,
``q:inflight:*``, ``q:inflight-keys``, ``batch:*``, ``m:tp:*``), ``lua/create.lua`` and
``lua/create_batch.lua`` (``owner:*:jobs|batches``, ``job:*``), ``lua/leases.lua``,
``lua/queued.lua`` and ``lua/outbox.lua`` (``leases``, ``queued``, ``outbox:due``),
``lua/quotas.lua`` (``q:*``) and ``lua/outbox_claim.lua``/``outbox_done.lua`` (``job:*``).
They follow the names below; a rename here must be made there too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["PRIORITY_SEP", "UNACKED", "UNACKED_INDEX", "Keys", "lane_key"]

PRIORITY_SEP = "\x06\x16"
"""kombu's Redis transport: separator between a queue's name and its priority step."""
UNACKED = "unacked"
"""kombu's hash of delivered, not yet acknowledged messages (its default name, no prefix)."""
UNACKED_INDEX = "unacked_index"
"""kombu's sorted set of those messages' delivery tags by delivery time."""


def lane_key(queue: str, priority: int) -> str:
    """The Redis list kombu reads for messages of ``priority`` on ``queue``."""
    return f"{queue}{PRIORITY_SEP}{priority}" if priority else queue


@dataclass(frozen=True)
class Keys:
    """The key names of one deployment (``prefix``: setting ``key_prefix``)."""

    prefix: str

    # jobs
    def job(self, job_id: str) -> str:
        """The job's hash (status, owner, request, result...)."""
        return f"{self.prefix}:job:{job_id}"

    def log(self, job_id: str) -> str:
        """The job's list of transitions."""
        return f"{self.prefix}:job:{job_id}:log"

    def idem(self, owner: str, key: str) -> str:
        """The idempotency record of ``(owner, Idempotency-Key)`` (hashed: keys are free text)."""
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return f"{self.prefix}:idem:{digest}"

    def batch_idem(self, owner: str, key: str | None) -> str:
        """The idempotency record of a batch upload (its own namespace beside the jobs')."""
        return self.idem(owner, f"batch:{key}")

    @property
    def no_idem(self) -> str:
        """A placeholder a script is given when the request has no idempotency key (never written)."""
        return f"{self.prefix}:idem:-"

    def owner_jobs(self, owner: str) -> str:
        """The owner's jobs, a sorted set of ids by ``created_at`` (``GET /v1/jobs``)."""
        return f"{self.prefix}:owner:{owner}:jobs"

    def owner_batches(self, owner: str) -> str:
        """The owner's batches, a sorted set of ids by ``created_at`` (``GET /v1/batches``)."""
        return f"{self.prefix}:owner:{owner}:batches"

    # queues
    @staticmethod
    def queue(queue: str) -> str:
        """The broker list of ``queue`` (kombu names it after the queue)."""
        return queue

    def lane(self, queue: str, priority: int) -> str:
        """The broker list of ``queue``'s priority step ``priority``."""
        return lane_key(self.queue(queue), priority)

    @property
    def broker_outbox(self) -> str:
        """RabbitMQ broker only: messages written with their job, not yet confirmed by the broker
        (a sorted set by when they were written; ``lua/broker.lua``, :mod:`rerankd.jobs.relay`)."""
        return f"{self.prefix}:broker:outbox"

    @property
    def no_lane(self) -> str:
        """A placeholder list for a script when a job names no queue (never written)."""
        return f"{self.prefix}:-"

    # transitions and their indexes
    @property
    def events(self) -> str:
        """Pub/sub channel of terminal transitions (``"<id> <status>"``)."""
        return f"{self.prefix}:events"

    @property
    def cancel(self) -> str:
        """Pub/sub channel of cancel requests for running jobs (``"<id>"``)."""
        return f"{self.prefix}:cancel"

    def reply(self, token: str) -> str:
        """Pub/sub channel of one API process: ``finish.lua`` sends there the record (JSON, less the
        request) of each job whose ``reply_to`` field names it, as the job ends."""
        return f"{self.prefix}:reply:{token}"

    @property
    def leases(self) -> str:
        """Running job ids by lease expiry (the reaper reads it)."""
        return f"{self.prefix}:leases"

    def waiting(self, queue: str, lane: int) -> str:
        """Jobs queued in ``queue``'s ``lane``, scored by when their record expires (lua/counters.lua):
        lane depths with RabbitMQ."""
        return f"{self.prefix}:waiting:{queue}|{lane}"

    @property
    def queued(self) -> str:
        """Queued job ids by when their message was last pushed (the reaper reads it)."""
        return f"{self.prefix}:queued"

    # batches
    def batch(self, batch_id: str) -> str:
        """The batch's hash (owner, total, ``n_<status>`` counts...)."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_items(self, batch_id: str) -> str:
        """The batch's job ids in input order."""
        return f"{self.prefix}:batch:{batch_id}:items"

    # workers
    @property
    def workers(self) -> str:
        """Known worker ids (a sorted set)."""
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        """A live worker's heartbeat hash (expires with the heartbeat)."""
        return f"{self.prefix}:worker:{worker_id}"

    # webhooks
    @property
    def outbox_due(self) -> str:
        """Job ids whose callback is due, by when (:mod:`rerankd.jobs.outbox`)."""
        return f"{self.prefix}:outbox:due"

    # metrics and quotas
    def metric(self, name: str) -> str:
        """A metric hash: ``name`` such as ``c:jobs_submitted_total``, ``h:job_run_seconds``, ``g:jobs_by_status``."""
        return f"{self.prefix}:m:{name}"

    def throughput(self, minute: int) -> str:
        """Jobs finished in ``minute`` (Unix time // 60), kept by ``lua/counters.lua``."""
        return f"{self.prefix}:m:tp:{minute}"

    @property
    def inflight_owners(self) -> str:
        """Owners with jobs in flight (the set of ``inflight`` keys in use)."""
        return f"{self.prefix}:q:inflight-keys"

    def inflight(self, owner: str) -> str:
        """The owner's jobs in flight (``owner|batch``: its batch jobs), scored by record expiry."""
        return f"{self.prefix}:q:inflight:{owner}"

    def rate(self, owner: str, minute: int) -> str:
        """The owner's requests and documents in ``minute`` (a hash): written by ``lua/quotas.lua`` only."""
        return f"{self.prefix}:q:rate:{owner}:{minute}"
