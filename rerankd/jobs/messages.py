"""The broker message of a job: Celery's task message (protocol 2) in kombu's Redis envelope.

The API and the batch service push it in the same Lua script that creates the job record (a job
is never recorded without its message, nor the reverse), and the reaper pushes it again for a
job whose worker died.  Built here, without a Celery app, so that neither the API nor the job
layer imports the worker; ``tests/unit/test_jobs.py`` compares it with what Celery's own
``send_task`` writes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

__all__ = ["TASK_NAME", "task_message"]

TASK_NAME = "rerankd.run_job"
"""The one task the workers run: ``run_job(job_id)``."""

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def task_message(job_id: str, queue: str, priority: int = 0) -> str:
    """The message of ``run_job(job_id)`` for ``queue`` as kombu's Redis transport stores it in
    the queue's list; ``priority`` is the lane (:mod:`rerankd.jobs.quotas`) kombu restores it to."""
    task_id = str(uuid.uuid4())
    args = [job_id]
    body: list[object] = [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    headers: dict[str, object] = {
        "lang": "py",
        "task": TASK_NAME,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
