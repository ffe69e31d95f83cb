"""The broker outbox: how a job's message reaches RabbitMQ without a job ever lacking one.

With RabbitMQ as the broker, Redis cannot push a message into a queue inside the script that
creates a job.  So the create scripts (and the reaper's, ``lua/broker.lua``) write the message
into ``{prefix}:broker:outbox`` (a sorted set of messages by when they were written) atomically
with the job's record; then:

1. the process that wrote it publishes it at once with publisher confirms
   (:meth:`BrokerOutbox.publish`) and removes it once RabbitMQ has confirmed it;
2. every API and worker process runs :meth:`BrokerOutbox.run`, which republishes the entries
   older than ``grace_s`` (their writer crashed between the script and the confirm, or RabbitMQ
   was away): ``lua/broker_due.lua`` re-scores what it takes, so several relays rarely send the
   same entry twice, and an entry whose relay dies comes due again.

Delivery is at least once: a message published twice (a crash after the confirm, before the
removal) is harmless, since a job's claim drops the message of a finished job and makes a
duplicate of a running one wait (:meth:`rerankd.jobs.store.JobStore.claim`).
While RabbitMQ is away the API still accepts jobs (their messages wait in the outbox).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from rerankd.jobs.keys import Keys
from rerankd.jobs.scripts import lua

__all__ = ["BrokerOutbox", "Publisher"]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Blocking, confirmed publish of messages in kombu's Redis envelope (:class:`rerankd.jobs.amqp.AmqpPublisher`)."""

    def publish(self, messages: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class BrokerOutbox:
    """Publishes the broker outbox's messages (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        publisher: Publisher,
        *,
        grace_s: float = 10.0,
        batch: int = 500,
        backoff_s: float = 1.0,
    ) -> None:
        """``grace_s``: age past which an entry counts as left behind; ``backoff_s``: after a
        failed publish, this process leaves new messages to the relay for that long (no request
        waits on a broker that is down)."""
        self.r: Any = client
        self.key = keys.broker_outbox
        self.publisher = publisher
        self.grace_s = grace_s
        self.batch = batch
        self.backoff_s = backoff_s
        self._down_until = 0.0
        self._due = client.register_script(lua("broker_due"))

    async def publish(self, messages: Sequence[str]) -> bool:
        """Publish ``messages`` (already in the outbox) and remove them once confirmed; ``False``
        when the broker could not take them (they stay for the relay).  Never raises for the broker."""
        if not messages:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            await asyncio.to_thread(self.publisher.publish, messages)
        except Exception as e:
            self._down_until = time.monotonic() + self.backoff_s
            log.warning(
                "broker unavailable (%s: %s): %d message(s) stay in the outbox and are republished by the relay",
                type(e).__name__,
                e,
                len(messages),
            )
            return False
        self._down_until = 0.0
        await self.r.zrem(self.key, *messages)
        return True

    async def relay_once(self) -> int:
        """Republish the entries left behind (older than ``grace_s``); returns how many were published."""
        due = [m.decode() for m in await self._due(keys=[self.key], args=[self.grace_s, self.batch])]
        if not due:
            return 0
        self._down_until = 0.0  # the relay always tries: it is how the outbox drains after an outage
        if not await self.publish(due):
            return 0
        log.info("broker relay: republished %d message(s) left in the outbox", len(due))
        return len(due)

    async def pending(self) -> int:
        """Messages not yet confirmed by the broker."""
        return int(await self.r.zcard(self.key))

    async def run(self, interval_s: float = 2.0) -> None:
        """:meth:`relay_once` every ``interval_s`` (at once again while a full batch was due) until cancelled."""
        while True:
            sent = 0
            try:
                sent = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("broker relay: %s: %s; retrying", type(e).__name__, e)
            if sent < self.batch:
                await asyncio.sleep(interval_s)

    def close(self) -> None:
        self.publisher.close()
