"""Messages a worker received but hands back unclaimed (see :mod:`rerankd.worker.slots`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rerankd.jobs.messages import task_message
from rerankd.jobs.quotas import BATCH
from rerankd.jobs.scripts import lua

if TYPE_CHECKING:
    from rerankd.jobs.store import JobStore

__all__ = ["give_back", "upper_lanes_waiting"]


async def give_back(store: JobStore, job_id: str, queue: str, lane: int) -> bool:
    """Put a fresh message of ``job_id`` at the consuming end of ``queue``'s ``lane`` (RabbitMQ: through
    the broker outbox); ``False`` when the job no longer waits for a run (the message is dropped)."""
    message = task_message(job_id, queue, lane)
    script = store.r.register_script(lua("give_back"))
    out = await script(keys=[store.job_key(job_id), store.message_list(queue, lane)], args=[message])
    if not out:
        return False
    await store.publish([message])
    return True


async def upper_lanes_waiting(store: JobStore, queues: Sequence[str]) -> bool:
    """Whether an interactive or low-lane message waits in one of ``queues``."""
    depths = await store.lane_depths(queues)
    return any(n for lanes in depths.values() for lane, n in lanes.items() if lane != BATCH)
