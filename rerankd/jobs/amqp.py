"""RabbitMQ as the broker (``RERANKD_BROKER_URL=amqp://...``): queues, lanes and a confirmed publisher.

Queues: one durable classic queue per name of :mod:`rerankd.jobs.routing`, declared with
``x-max-priority`` :data:`MAX_PRIORITY` by the workers (Celery's ``task_queue_max_priority``) and by
:class:`AmqpPublisher`, identically (RabbitMQ refuses a declaration that differs).  Classic queues:
quorum queues have no priorities before RabbitMQ 4.0 and only two levels since, and the three
lanes need three.  Messages are persistent (``delivery_mode`` 2).

Lanes (:mod:`rerankd.jobs.quotas`): kombu's Redis transport serves its *lower* priority steps
first (interactive 0, low 6, batch 9); RabbitMQ serves *higher* priorities first, so a lane is
published as ``MAX_PRIORITY - lane`` (interactive 9, low 3, batch 0): strict order within a queue
as long as a consumer's prefetch window is small (``worker_prefetch_multiplier`` 1).

Messages are written by the job scripts in kombu's Redis envelope (:func:`rerankd.jobs.messages.task_message`)
into the broker outbox (:mod:`rerankd.jobs.relay`); :func:`decode` turns one into what AMQP carries.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Producer, Queue

__all__ = ["MAX_PRIORITY", "AmqpPublisher", "Outgoing", "amqp_priority", "amqp_queue", "decode", "lane_of"]

log = logging.getLogger(__name__)

MAX_PRIORITY = 9
"""``x-max-priority`` of every queue (the highest lane step of the Redis transport)."""


def amqp_priority(lane: int) -> int:
    """The AMQP priority of a lane (0 interactive -> 9, 6 low -> 3, 9 batch -> 0)."""
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, lane))


def lane_of(priority: int) -> int:
    """The lane of a message delivered with AMQP ``priority`` (the inverse of :func:`amqp_priority`)."""
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, priority))


def amqp_queue(name: str) -> Queue:
    """The queue ``name`` as Celery's workers declare it (``task_create_missing_queues``: a direct
    exchange of the same name, bound with the name as routing key) plus ``x-max-priority``."""
    return Queue(
        name,
        Exchange(name, type="direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments={"x-max-priority": MAX_PRIORITY},
    )


@dataclass(frozen=True)
class Outgoing:
    """One message as AMQP carries it."""

    queue: str
    body: bytes
    headers: dict[str, Any]
    priority: int
    correlation_id: str
    content_type: str
    content_encoding: str


def decode(message: str) -> Outgoing:
    """The AMQP form of a message in kombu's Redis envelope (queue from its routing key, lane
    from its priority step)."""
    env = json.loads(message)
    props = env["properties"]
    return Outgoing(
        queue=str(props["delivery_info"]["routing_key"]),
        body=base64.b64decode(env["body"]),
        headers=dict(env["headers"]),
        priority=amqp_priority(int(props.get("priority") or 0)),
        correlation_id=str(props.get("correlation_id") or env["headers"].get("id", "")),
        content_type=str(env.get("content-type", "application/json")),
        content_encoding=str(env.get("content-encoding", "utf-8")),
    )


class AmqpPublisher:
    """Publishes messages with publisher confirms over one connection (thread-safe, blocking).

    :meth:`publish` returns once RabbitMQ has confirmed every message (written to disk for a
    durable queue), or raises; the connection is then dropped and the next call makes a new one.
    Each message is ``mandatory``: one that no queue takes is an error, never a silent loss."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._declared: set[str] = set()

    def _ready(self) -> Producer:
        if self._producer is None:
            conn = Connection(
                self.url,
                connect_timeout=self.timeout_s,
                transport_options={"confirm_publish": True},
                heartbeat=0,
            )
            conn.ensure_connection(max_retries=1, timeout=self.timeout_s)
            self._conn, self._producer = conn, Producer(conn.channel())
            self._declared.clear()
        return self._producer

    def _send(self, messages: Sequence[Outgoing]) -> None:
        producer = self._ready()
        for out in messages:
            if out.queue not in self._declared:
                amqp_queue(out.queue)(producer.channel).declare()
                self._declared.add(out.queue)
            producer.publish(
                out.body,
                routing_key=out.queue,
                exchange="",
                mandatory=True,
                delivery_mode=2,
                priority=out.priority,
                headers=out.headers,
                content_type=out.content_type,
                content_encoding=out.content_encoding,
                correlation_id=out.correlation_id,
                confirm_timeout=self.timeout_s,
            )

    def publish(self, messages: Sequence[str]) -> None:
        """Publish ``messages`` (kombu Redis envelopes, :func:`decode`), confirmed; one retry on a
        fresh connection (a broker restart leaves the old one broken)."""
        outgoing = [decode(m) for m in messages]
        with self._lock:
            for retry in (True, False):
                try:
                    self._send(outgoing)
                    return
                except Exception as e:
                    self._reset()
                    if not retry:
                        raise
                    log.info("broker publish failed (%s: %s); reconnecting once", type(e).__name__, e)

    def _reset(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except Exception as e:  # a dead connection may fail to close; it is dropped either way
                log.debug("closing broker connection: %s", e)

    def close(self) -> None:
        with self._lock:
            self._reset()
