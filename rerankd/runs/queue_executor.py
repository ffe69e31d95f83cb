"""A run's queries as jobs of a rerankd service: the executor behind ``rerankd rerank --queue``.

Each pending query becomes one ``POST /v1/jobs`` on the model's queue, so every worker of
that queue takes a share (Celery hands each worker one job at a time per free slot).  At
most ``in_flight`` jobs are outstanding; results are yielded as jobs finish and the run
journal (:mod:`rerankd.runs`) puts them back in input order.

Nothing is lost or done twice across crashes:

* Every job carries an ``Idempotency-Key`` derived from the run's ``run_id`` (kept in the
  journal across resumes) and the request itself.  A client killed mid-run and started
  again re-submits its unfinished queries with the same keys and gets the *same* jobs
  back, finished or still running, instead of new ones.
* A killed worker's job is redelivered by the service itself (leases, ``max_attempts``);
  the client only waits.
* A job that ends ``failed`` for a transient reason (``engine_error``, ``worker_lost``,
  ``deadline_exceeded``, ``expired``) is submitted again under the next key
  (``...-1``, ``...-2``), at most ``max_resubmits`` times.  An ``invalid_request`` or a
  cancelled job stops the run with the server's message.
* A full queue (503) or a server that is briefly unreachable is retried with capped
  exponential backoff until ``patience_s`` has passed without progress.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from rerankd.client import AsyncClient, RerankdError, error_message, job_body
from rerankd.jobs import body_hash
from rerankd.runs.executors import fan_out
from rerankd.types import RerankRequest, RerankResult

__all__ = ["QueueExecutor", "QueueJobError"]

log = logging.getLogger(__name__)

PERMANENT_CODES = frozenset({"invalid_request", "cancelled"})
"""Job error codes that another attempt would not fix."""

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class QueueJobError(RuntimeError):
    """A query whose job cannot succeed (bad request, cancelled, or failed too often)."""


@dataclass
class QueueExecutor:
    """An :data:`rerankd.runs.executors.Executor` that runs each request as a job of the service.

    ``run_id`` scopes the idempotency keys (use ``ResumableRun.run_id``); ``model`` is the
    service's model name (``None``: the service default).
    """

    client: AsyncClient
    run_id: str
    model: str | None = None
    in_flight: int = 16
    max_resubmits: int = 2
    patience_s: float = 600.0
    poll_min_s: float = 0.2
    poll_max_s: float = 2.0
    job_timeout_s: float = 3600.0
    workers: Counter[str] = field(default_factory=Counter)
    """How many of this run's jobs each worker finished (filled as results arrive)."""
    replayed: int = 0
    """Jobs the server already had for our idempotency key (submitted by an earlier run)."""

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {self.in_flight}")
        if self.max_resubmits < 0:
            raise ValueError(f"max_resubmits must be >= 0, got {self.max_resubmits}")
        if not self.run_id:
            raise ValueError("run_id is empty")

    def idempotency_key(self, request: RerankRequest, attempt: int) -> str:
        """The job key of ``request``'s ``attempt``-th submission in this run."""
        return f"rerankd-run-{self.run_id}-{body_hash(request.model_dump(mode='json'))[:32]}-{attempt}"

    def __call__(self, requests: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        return fan_out(len(requests), self.in_flight, lambda i: self.run_one(requests[i]))

    async def run_one(self, request: RerankRequest) -> RerankResult:
        """Submit ``request`` (or find its earlier job) and wait for its result."""
        qid = request.query.qid
        last_error = ""
        for attempt in range(self.max_resubmits + 1):
            try:
                job = await self._submit(request, self.idempotency_key(request, attempt))
                job = await self._wait(job)
            except _Gone as e:  # the job of this key expired on the server
                last_error = str(e)
                log.warning("query %r: %s", qid, last_error)
                continue
            status = job["status"]
            if status == "succeeded":
                try:
                    result = RerankResult.model_validate(job["result"])
                except ValidationError as e:
                    raise QueueJobError(f"query {qid!r}: job {job['id']} returned an invalid result: {e}") from e
                self.workers[str(job.get("worker") or "?")] += 1
                return result
            error = job.get("error") or {}
            code, message = error.get("code"), error.get("message") or status
            if code in PERMANENT_CODES or status == "cancelled":
                raise QueueJobError(f"query {qid!r}: job {job['id']} {status} ({code}): {message}")
            last_error = f"job {job['id']} {status} ({code}): {message}"
            if attempt < self.max_resubmits:
                n, most = attempt + 1, self.max_resubmits
                log.warning("query %r: %s; submitting again (%d of %d)", qid, last_error, n, most)
        raise QueueJobError(f"query {qid!r}: failed {self.max_resubmits + 1} times; last: {last_error}")

    async def _submit(self, request: RerankRequest, key: str) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            resp = await self.client.http.post(
                "/v1/jobs",
                json=job_body(request, self.model, None, None),
                headers={"Idempotency-Key": key},
            )
            if resp.status_code in RETRYABLE_STATUS:
                raise _Transient(resp.status_code, error_message(resp), _retry_after(resp))
            if resp.status_code == 404 and _code(resp) == "idempotency_key_expired":
                raise _Gone(f"the job of Idempotency-Key {key} has expired: {error_message(resp)}")
            if resp.status_code >= 400:
                raise RerankdError(resp.status_code, error_message(resp))
            if resp.headers.get("Idempotent-Replayed") == "true":
                self.replayed += 1
            return dict(resp.json())

        return await self._patiently(call, f"submitting query {request.query.qid!r}")

    async def _wait(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = job["id"]
        delay = self.poll_min_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.job_timeout_s

        async def get() -> dict[str, Any]:
            resp = await self.client.http.get(f"/v1/jobs/{job_id}")
            if resp.status_code in RETRYABLE_STATUS:
                raise _Transient(resp.status_code, error_message(resp), _retry_after(resp))
            if resp.status_code == 404:
                raise _Gone(f"job {job_id} has expired on the server: {error_message(resp)}")
            if resp.status_code >= 400:
                raise RerankdError(resp.status_code, error_message(resp))
            return dict(resp.json())

        while job["status"] not in ("succeeded", "failed", "cancelled", "expired"):
            if loop.time() > deadline:
                raise QueueJobError(f"job {job_id} still {job['status']} after {self.job_timeout_s:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_max_s)
            job = await self._patiently(get, f"polling job {job_id}")
        return job

    async def _patiently(self, call: Callable[[], Awaitable[dict[str, Any]]], what: str) -> dict[str, Any]:
        """``call()`` retried on transient errors until ``patience_s`` has passed."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience_s
        backoff = 0.5
        while True:
            try:
                return await call()
            except (_Transient, httpx.TransportError) as e:
                if loop.time() > give_up:
                    raise QueueJobError(f"{what}: the service kept failing for {self.patience_s:g}s: {e}") from e
                wait = e.retry_after if isinstance(e, _Transient) and e.retry_after else backoff
                wait = min(wait, max(0.0, give_up - loop.time())) * random.uniform(0.8, 1.2)
                log.info("%s: %s; retrying in %.1fs", what, e, wait)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, 10.0)


class _Gone(Exception):
    """The job behind a key or id no longer exists (expired): submit under the next key."""


class _Transient(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.retry_after = retry_after


def _code(resp: httpx.Response) -> str | None:
    try:
        code = resp.json().get("code")
    except ValueError:
        return None
    return code if isinstance(code, str) else None


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
