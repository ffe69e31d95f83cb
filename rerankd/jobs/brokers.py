"""The job store of a deployment, wired to its broker: kombu's Redis lists (the default) or
RabbitMQ through the broker outbox (``RERANKD_BROKER_URL=amqp://...``, :mod:`rerankd.jobs.relay`)."""

from __future__ import annotations

from rerankd.config import Settings
from rerankd.jobs.relay import BrokerOutbox
from rerankd.jobs.store import JobStore

__all__ = ["open_store"]


def open_store(settings: Settings) -> JobStore:
    """The job store at ``RERANKD_REDIS_URL``; with RabbitMQ as the broker, its messages go
    through the broker outbox and a confirmed publisher (run the relay: ``store.broker_outbox.run()``)."""
    store = JobStore.from_url(settings.store_url, settings.key_prefix, timeout_s=settings.redis_timeout_s)
    if settings.amqp and settings.broker_url:
        from rerankd.jobs.amqp import AmqpPublisher

        publisher = AmqpPublisher(settings.broker_url, timeout_s=settings.redis_timeout_s)
        store.use_broker_outbox(BrokerOutbox(store.r, store.keys, publisher))
    return store
