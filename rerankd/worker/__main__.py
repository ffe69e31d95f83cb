"""``python -m rerankd.worker [celery worker options]``: a worker for ``RERANKD_MODEL``.

Runs ``celery -A rerankd.worker.app worker --pool threads --concurrency N``; extra arguments are
passed to ``celery worker``.  The worker chooses its queues itself once its engine is loaded
(:mod:`rerankd.jobs.routing`, ``RERANKD_WORKER_ROLE``), so ``--queues`` is not given.
"""

from __future__ import annotations

import sys

from rerankd.config import get_settings
from rerankd.extras import require


def worker_argv(extra: list[str]) -> list[str]:
    """The ``celery`` argument list of a worker for the configured model."""
    s = get_settings()
    argv = [
        "-A",
        "rerankd.worker.app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(s.worker_concurrency),
        "--loglevel",
        s.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if s.task_events:
        argv.append("--task-events")
    return argv + extra


def main() -> None:
    require("service", "the worker")
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *worker_argv(sys.argv[1:])]
    celery_main()


if __name__ == "__main__":
    main()
