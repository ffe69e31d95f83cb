"""kombu's Redis transport, made to survive a Redis outage (``broker_transport`` setting).

With kombu 5.7 a worker that holds unacknowledged messages when Redis goes away dies:
on the connection error Celery collects and closes the old connection, and closing its
channel restores the unacked messages through that channel, whose connection details are
already gone (``AttributeError: 'NoneType' object has no attribute 'hostname'`` from
``QoS.restore_unacked``, an error Celery does not expect, so the worker stops).  An ack
sent later, when the task ends on the new connection, fails the same way.

Both are harmless to skip: the messages stay in kombu's unacked hash in Redis, the job
record is the truth (a redelivered message of a finished job is dropped, one of a job
still running under a live lease waits), and a job whose worker was lost is reclaimed
from its expired lease by the reaper (:mod:`rerankd.jobs.reaper`).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from redis import exceptions as redis_errors

__all__ = ["Transport"]

log = logging.getLogger(__name__)

_GONE = (AttributeError, OSError, redis_errors.ConnectionError, redis_errors.TimeoutError)


class QoS(kombu_redis.QoS):
    """Unacked bookkeeping that tolerates a channel whose connection is gone."""

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)
        except _GONE as e:
            log.warning(
                "broker connection lost: %d unacknowledged message(s) stay in Redis (%s: %s); "
                "their jobs are reclaimed from expired leases",
                len(self._delivered),
                type(e).__name__,
                e,
            )
            self._delivered.clear()

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)
        except _GONE as e:
            log.info("ack of message %s not sent (old broker connection: %s); local state dropped", delivery_tag, e)
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except _GONE as e:
            log.info("reject of message %s not sent (old broker connection: %s); local state dropped", delivery_tag, e)
            virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    """``broker_transport = "rerankd.worker.broker:Transport"`` (a ``redis://`` URL)."""

    Channel = Channel
