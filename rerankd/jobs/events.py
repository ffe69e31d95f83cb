"""Pub/sub channels of the job store (names in :mod:`rerankd.jobs.keys`): terminal transitions and
cancel requests, read as async iterators by :meth:`JobStore.finished_events
<rerankd.jobs.store.JobStore.finished_events>` and :meth:`~rerankd.jobs.store.JobStore.cancel_requests`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

__all__ = ["channel_messages", "messages"]


async def messages(client: Any, channel: str) -> AsyncIterator[str]:
    """Every message published on ``channel`` from now on, until the caller stops (a lost
    connection raises; messages meanwhile are not replayed)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    async with pubsub:
        await pubsub.subscribe(channel)
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg and msg.get("type") == "message":
                yield msg["data"].decode()


async def channel_messages(client: Any, *channels: str) -> AsyncIterator[tuple[str, str]]:
    """``(channel, message)`` of every message published on ``channels`` from now on (one
    connection; as :func:`messages`)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    async with pubsub:
        await pubsub.subscribe(*channels)
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg and msg.get("type") == "message":
                yield msg["channel"].decode(), msg["data"].decode()
