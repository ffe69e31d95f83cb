"""Build the Celery app from :class:`rerankd.config.Settings` (no side effects, no tasks)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from rerankd.config import Settings
from rerankd.jobs.amqp import MAX_PRIORITY, amqp_priority
from rerankd.jobs.quotas import INTERACTIVE
from rerankd.jobs.routing import queue_name


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the broker (Redis, or RabbitMQ: :func:`_amqp_conf`), with the reliability
    settings of the job API.

    No result backend: the job record in Redis is the truth (:mod:`rerankd.jobs`).
    """
    app = Celery("rerankd", broker=settings.celery_broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_name(settings.key_prefix, settings.model),
        task_create_missing_queues=True,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_hijack_root_logger=False,
        # Our transport survives a Redis outage (see rerankd.worker.broker); the worker keeps
        # reconnecting for as long as it takes.  Running jobs are not cancelled on connection
        # loss: they record their outcome once Redis is back (their lease fences the result).
        broker_transport="rerankd.worker.broker:Transport",
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_timeout=settings.redis_timeout_s,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
            "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": settings.redis_timeout_s,
        },
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )
    if settings.amqp:
        app.conf.update(_amqp_conf(settings))
    return app


def _amqp_conf(settings: Settings) -> dict[str, Any]:
    """RabbitMQ (``RERANKD_BROKER_URL=amqp://``): kombu's py-amqp transport with publisher confirms
    (Celery's own publishes: the retry of a message whose job runs elsewhere), classic durable
    queues with ``x-max-priority`` (lanes as priorities, :mod:`rerankd.jobs.amqp`), acks late and a
    prefetch of one message per free slot (from the Redis configuration).  RabbitMQ requeues a
    worker's unacknowledged messages when its connection drops, so there is no visibility timeout."""
    return {
        "broker_transport": None,
        "broker_transport_options": {"confirm_publish": True},
        "task_queue_max_priority": MAX_PRIORITY,
        "task_default_priority": amqp_priority(INTERACTIVE),
        "task_default_queue_type": "classic",
        "task_create_missing_queue_type": "classic",
        # a paused or wedged worker's connection is closed by RabbitMQ after two missed
        # heartbeats, which requeues its messages (its jobs are fenced by their leases)
        "broker_heartbeat": 10,
    }
