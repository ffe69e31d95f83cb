"""The dispatcher of the webhook outbox; one runs in every worker process (on the engine host's loop).

Every ``poll_s`` it claims due deliveries (:class:`rerankd.jobs.outbox.Outbox`) under a lease of
``webhook_timeout_s + 5`` seconds and delivers each: the egress policy is checked again (DNS may
have changed since the job was created), the event is signed with the job key's secrets and
POSTed to the checked address.  A 2xx settles it ``delivered``; anything else (other status,
redirect, network error, timeout) schedules the next attempt after the next delay of
``webhook_retry_schedule_s`` (``retrying``), and after the last one it is ``failed``.  A URL the
policy refuses at delivery is ``failed`` at once.  Tenants see only that status; the target's
answer or error is logged here, never stored.

At-least-once: a dispatcher killed mid-delivery leaves its entry claimed; once the lease runs
out any dispatcher delivers it again with the same ``webhook-id`` (``msg_<job id>``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

import httpx

from rerankd.jobs.outbox import Claimed, Outcome
from rerankd.webhooks.delivery import event_body, post_signed
from rerankd.webhooks.egress import EgressError, EgressPolicy
from rerankd.webhooks.signing import SecretBook

if TYPE_CHECKING:
    from rerankd.config import Settings
    from rerankd.jobs import JobRecord, JobStore

__all__ = ["Dispatcher", "message_id"]

log = logging.getLogger(__name__)


def message_id(job_id: str) -> str:
    """The ``webhook-id`` of a job's (one) terminal event, the same on every attempt."""
    return f"msg_{job_id}"


def event_data(record: JobRecord) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it, less the callback's own changing status."""
    from rerankd.jobs.views import job_view

    data = job_view(record)
    data.pop("callback_status", None)
    return data


class Dispatcher:
    """Claims and delivers due callbacks until cancelled."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        holder: str,
        *,
        concurrency: int = 16,
        poll_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.outbox = store.outbox()
        self.holder = holder
        self.policy = EgressPolicy.from_settings(settings)
        self.secrets = SecretBook(settings.webhook_secrets, settings.webhook_secret)
        self.schedule = list(settings.webhook_retry_schedule_s)
        self.timeout_s = settings.webhook_timeout_s
        self.lease_s = settings.webhook_timeout_s + 5.0
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.transport = transport
        self._tasks: set[asyncio.Task[Outcome | None]] = set()

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("webhook dispatcher %s: %s", self.holder, e)
                await asyncio.sleep(self.poll_s * random.uniform(0.8, 1.2))
        finally:
            for task in list(self._tasks):
                task.cancel()  # their entries come due again when the lease runs out

    async def poll_once(self) -> list[Claimed]:
        """Claim what is due (within the free delivery slots) and start delivering it."""
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return []
        claimed = await self.outbox.claim(self.holder, self.lease_s, free, self.max_attempts)
        for c in claimed:
            if c.attempt == 0:
                log.warning("callback of job %s failed: its dispatchers died %d times", c.job_id, self.max_attempts)
                continue
            task = asyncio.get_running_loop().create_task(self.deliver(c), name=f"webhook-{c.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return claimed

    async def deliver(self, c: Claimed) -> Outcome | None:
        """One attempt of a claimed delivery; returns the outcome recorded (``None``: lost the claim)."""
        outcome, detail = await self._attempt(c)
        retry_in = self.schedule[c.attempt - 1] if outcome == "retrying" else 0.0
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        log.log(
            level, "callback of job %s, attempt %d/%d: %s (%s)", c.job_id, c.attempt, self.max_attempts, outcome, detail
        )
        try:
            held = await self.outbox.complete(c.job_id, self.holder, c.attempt, outcome, retry_in)
        except Exception as e:  # the lease runs out and the attempt is made again
            log.warning("callback of job %s: outcome not recorded: %s", c.job_id, e)
            return None
        return outcome if held else None

    async def _attempt(self, c: Claimed) -> tuple[Outcome, str]:
        retry: Outcome = "retrying" if c.attempt < self.max_attempts else "failed"
        record = await self.store.get(c.job_id, with_request=False)
        if record is None or record.callback_url is None:
            return "failed", "job record gone"
        secrets = self.secrets.for_owner(record.owner)
        if not secrets:
            return "failed", f"no webhook secret for key {record.owner!r}"
        body = event_body(f"job.{record.status}", record.finished_at or record.created_at, event_data(record))
        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self.policy.resolve(record.callback_url)
                status = await post_signed(
                    target,
                    body,
                    msg_id=message_id(c.job_id),
                    secrets=secrets,
                    timeout_s=self.timeout_s,
                    transport=self.transport,
                )
        except EgressError as e:
            if e.transient:
                return retry, str(e)
            return "failed", f"refused by the egress policy: {e}"
        except (httpx.HTTPError, OSError, TimeoutError) as e:
            return retry, f"{type(e).__name__}: {e}"
        if 200 <= status < 300:
            return "delivered", f"HTTP {status}"
        return retry, f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
