"""Hand a running job back to its queue, its attempt not counted: what a stopping worker does with
the jobs it could not finish within its drain limit (``RERANKD_DRAIN_S``, :mod:`rerankd.worker.host`).

``lua/handback.lua`` checks that the caller's attempt still holds the job (same worker and attempt,
as ``finish`` does), sets it ``queued`` again with ``attempts`` one lower, drops its lease, keeps the
status counters and the queued index in step, pushes a fresh broker message at the front of the
job's lane, or into the RabbitMQ broker outbox (as the reaper does, ``lua/broker.lua``), and logs
``handed back by <worker> (<reason>)`` in its history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerankd.jobs.messages import task_message
from rerankd.jobs.scripts import lua

if TYPE_CHECKING:
    from rerankd.jobs.store import JobStore

__all__ = ["hand_back"]


async def hand_back(store: JobStore, job_id: str, worker_id: str, attempt: int, reason: str = "stopping") -> bool:
    """Queue ``job_id`` again if ``worker_id``'s ``attempt`` holds it; ``False`` (nothing written)
    when it does not (finished, taken over, or gone)."""
    queue, priority = await store.r.hmget(store.job_key(job_id), "queue", "priority")
    if not queue:
        return False
    q, p = queue.decode(), int(priority or 0)
    message = task_message(job_id, q, p)
    script = store.r.register_script(lua("handback"))
    out = await script(
        keys=[store.job_key(job_id), store.log_key(job_id), store.message_list(q, p)],
        args=[worker_id, str(attempt), message, reason],
    )
    if int(out) != 1:
        return False
    await store.publish([message])  # RabbitMQ: from the broker outbox, as the reaper does
    return True
