"""The Celery worker: one engine per worker process, many concurrent jobs sharing it.

``celery -A rerankd.worker.app worker`` (or ``python -m rerankd.worker``) consumes the queue
of the model named by ``RERANKD_MODEL`` with a thread pool; the engine lives on an asyncio
event loop thread of its own (:mod:`rerankd.worker.host`), loaded once at worker start.
"""

TASK_NAME = "rerankd.run_job"
