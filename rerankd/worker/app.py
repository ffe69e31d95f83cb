"""The worker's Celery app: ``celery -A rerankd.worker.app worker``.

Settings come from the environment (:func:`rerankd.config.get_settings`).  The engine is
loaded once per worker process when the worker starts: in the main process for the
``threads`` (default) and ``solo`` pools, which do not fork, and in each child for
``prefork`` (never in the parent before the fork).

The worker reads the queues of the capabilities it serves (:mod:`rerankd.jobs.routing`): those
of its engine, known once it is loaded, or of ``RERANKD_WORKER_ROLE``.  A ``prefork`` parent has
no engine: it reads the queues of its role, which it needs (``auto`` is a start-up error there).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_init, worker_process_init, worker_shutdown, worker_shutting_down

from rerankd.calibration import CalibrationError
from rerankd.config import get_settings
from rerankd.config_checks import interactive_slots
from rerankd.jobs.routing import CAPABILITIES, ROLES, role_capabilities, worker_queues
from rerankd.worker import TASK_NAME
from rerankd.worker.celery_app import make_celery
from rerankd.worker.host import WorkerStopping, drain_host, get_host, start_host, stop_host

log = logging.getLogger(__name__)

settings = get_settings()
app = make_celery(settings)


@app.task(
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    ignore_result=True,
)
def run_job(self: Task, job_id: str) -> None:
    """Run job ``job_id`` (its request is in the job record) on this process's engine.

    Job outcomes (including engine errors) are recorded by the host; an exception here means
    the job store itself failed (e.g. Redis went away): the message is requeued, or left
    unacknowledged for redelivery after the visibility timeout if Redis cannot take it back.
    """
    try:
        info = self.request.delivery_info or {}
        retry_in = get_host().run_job(job_id, info.get("routing_key"), info.get("priority"))
    except WorkerStopping as e:  # delivered as the worker stops: left for another worker, unclaimed
        raise Reject(str(e), requeue=True) from e
    except Exception as e:
        log.warning("job %s: %s: %s; requeueing its message", job_id, type(e).__name__, e)
        time.sleep(1.0)
        raise Reject(f"{type(e).__name__}: {e}", requeue=True) from e
    if retry_in is not None:
        raise self.retry(countdown=retry_in, max_retries=None)


def _pool_forks(sender: Any) -> bool:
    from celery import concurrency

    pool = getattr(sender, "pool_cls", None)
    if isinstance(pool, str):
        pool = concurrency.get_implementation(pool)
    from celery.concurrency.prefork import TaskPool as PreforkPool

    return isinstance(pool, type) and issubclass(pool, PreforkPool)


def _start() -> list[str]:
    """Load the engine host; returns the queues it serves."""
    logging.getLogger("rerankd").setLevel(settings.log_level.upper())
    try:
        return start_host(settings).queues
    except CalibrationError as e:
        log.critical("cannot start the engine host: %s", e)
        raise SystemExit(f"rerankd worker: {e}") from e
    except BaseException as e:
        log.critical("cannot start the engine host: %s", e, exc_info=True)
        raise SystemExit(f"rerankd worker: cannot load engine {settings.engine!r} / {settings.model!r}: {e}") from e


def _consume(sender: Any, queues: list[str]) -> None:
    """Make the worker's consumer read exactly ``queues`` (it starts after ``worker_init``)."""
    if sender is None or not hasattr(sender, "app"):
        return
    sender.app.amqp.queues.select(queues)
    log.info("consuming from %s", ", ".join(queues))


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    if _pool_forks(sender):
        log.warning("prefork pool: one engine per child process; use --pool threads to share one engine")
        caps = role_capabilities(settings.worker_role)
        if caps is None:  # reading every queue would take jobs the engine answers with CapabilityError
            raise SystemExit(
                "rerankd worker: --pool prefork reads its queues before any engine loads, so "
                "RERANKD_WORKER_ROLE=auto (the engine's capabilities) cannot choose them: set "
                f"RERANKD_WORKER_ROLE to one of {', '.join(ROLES)}, or use --pool threads (the default)"
            )
        _consume(sender, worker_queues(settings.key_prefix, settings.model, [c for c in CAPABILITIES if c in caps]))
        return
    _consume(sender, _start())
    _size_slots(getattr(sender, "concurrency", None))


def _size_slots(pool_size: int | None) -> None:
    """Reserve the interactive slots of the pool Celery actually runs (``--concurrency`` may differ
    from ``RERANKD_WORKER_CONCURRENCY``)."""
    if not isinstance(pool_size, int) or pool_size == settings.worker_concurrency:
        return
    try:
        reserved = interactive_slots(settings.interactive_slots, pool_size)
    except ValueError as e:
        raise SystemExit(f"rerankd worker: --concurrency {pool_size}: {e}") from e
    get_host().slots.resize(pool_size, reserved)


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    from rerankd.worker import host

    if host._HOST is None:
        _start()


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    # Warm shutdown waits for the pool: running jobs finish within RERANKD_DRAIN_S or are handed back.
    drain_host()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    stop_host()
