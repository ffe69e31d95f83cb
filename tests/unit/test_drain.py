"""The drain of a stopping worker (rerankd/worker/drain.py), without Redis: which jobs are left to
finish, which are cancelled for a hand-back, and that a stopping host claims nothing."""

from __future__ import annotations

import asyncio

import pytest

from rerankd.config import Settings
from rerankd.worker.drain import Drain, WorkerStopping
from rerankd.worker.host import EngineHost
from rerankd.worker.watch import JobWatch, Running

pytestmark = pytest.mark.anyio


def _run(watch: JobWatch, job_id: str, seconds: float) -> Running:
    """A running job as the host registers it: it leaves ``watch.running`` when it ends."""

    async def job() -> None:
        try:
            await asyncio.sleep(seconds)
        finally:
            watch.running.pop(job_id, None)

    entry = Running(attempt=1, task=asyncio.ensure_future(job()))  # type: ignore[arg-type]
    watch.running[job_id] = entry
    return entry


async def test_running_jobs_finish_within_the_limit_and_the_rest_are_cancelled_for_a_hand_back() -> None:
    watch = JobWatch("w1")
    short, long = _run(watch, "short", 0.05), _run(watch, "long", 60)
    drain = Drain(watch, "w1", limit_s=0.5)
    await asyncio.wait_for(drain.run(), 10)
    assert drain.handing_back
    assert short.task is not None and short.task.done() and not short.task.cancelled() and short.reason is None
    with pytest.raises(asyncio.CancelledError):
        assert long.task is not None
        await long.task
    assert long.reason == "handback" and watch.running == {}


async def test_the_drain_ends_as_soon_as_nothing_runs() -> None:
    drain = Drain(JobWatch("w1"), "w1", limit_s=3600)
    await asyncio.wait_for(drain.run(), 10)  # does not wait for the limit
    assert drain.handing_back


async def test_a_stopping_host_claims_no_job() -> None:
    host = EngineHost(Settings(drain_s=5), worker_id="w1")  # never started: any Redis call would raise
    assert host.drain.limit_s == 5
    host.begin_drain()
    with pytest.raises(WorkerStopping, match="w1 is stopping"):
        await host.arun_job("job_1")


def test_the_drain_limit_is_at_most_the_job_deadline_and_the_stop_timeout_leaves_a_margin() -> None:
    assert Settings(drain_s=600, job_deadline_s=120).drain_limit_s == 120
    s = Settings(drain_s=10)
    assert s.drain_limit_s == 10 and s.worker_stop_timeout_s > s.drain_limit_s
