"""The Celery worker: one engine per worker process, many concurrent jobs sharing it.

``celery -A rerankd.worker.app worker`` (or ``python -m rerankd.worker``) consumes the queue
of the model named by ``RERANKD_MODEL`` with a thread pool; the engine lives on an asyncio
event loop thread of its own (:mod:`rerankd.worker.host`), loaded once at worker start.
"""

from rerankd.jobs.messages import TASK_NAME

__all__ = ["TASK_NAME"]
