"""A stopping worker drains (issue 20): SIGTERM lets running jobs finish within ``RERANKD_DRAIN_S``
and hands the rest back to their queue without counting an attempt, so ordinary stops never cost a
job an attempt (nor, after three of them, fail it as ``worker_lost``).

Real parts: ``rerankd up`` (Valkey, API, one worker process on the SleepEngine: ``sleep=N`` in the
query makes a job last N seconds).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rerankd.jobs.redact import worker_ref
from rerankd.launchers.net import free_port
from tests.support.up import Up, start_up, stop_up, up_env

pytestmark = pytest.mark.integration

FINAL = {"succeeded", "failed", "cancelled", "expired"}


def _events(job: dict[str, Any]) -> list[str]:
    return [h.split(" ")[1] for h in job["history"]]


@pytest.fixture
def up_drain_4s(tmp_path: Path) -> Iterator[Up]:
    up = start_up(tmp_path, free_port(), tmp_path / "data", up_env(RERANKD_DRAIN_S="4"))
    try:
        yield up
    finally:
        stop_up(up)


def test_sigterm_to_the_worker_finishes_short_jobs_and_hands_long_ones_back(up_drain_4s: Up) -> None:
    up = up_drain_4s
    short, long = up.submit("short sleep=2"), up.submit("long sleep=12")
    up.wait([short, long], {"running"}, timeout=60)
    worker = up.children()["worker"]
    worker.terminate()  # SIGTERM: Celery's warm shutdown; `rerankd up` then restarts the worker
    deadline = time.monotonic() + 30
    while f"worker {socket.gethostname()}:{worker.pid} stopping: claims no new job" not in up.text():
        assert time.monotonic() < deadline, up.text()[-3000:]
        time.sleep(0.1)
    late = up.submit("late sleep=1")  # while the worker drains: left for the next one
    worker.wait(60)

    jobs = up.wait([short, long, late], FINAL, timeout=120)
    # the short job finished within the drain limit, on the stopping worker
    assert jobs[short]["status"] == "succeeded" and jobs[short]["attempts"] == 1, jobs[short]
    assert _events(jobs[short]) == ["queued", "running", "succeeded"], jobs[short]["history"]
    # the long one went back to its queue when the limit passed, then ran on the restarted worker:
    # one attempt in all
    job = jobs[long]
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert _events(job) == ["queued", "running", "handed", "running", "succeeded"], job["history"]
    assert any(h.endswith("(stopping)") and " handed back by " in h for h in job["history"]), job["history"]
    assert f"job {long}: still running after the drain limit (4s); handing it back" in up.text()
    assert f"worker (pid {worker.pid}) exited with code 0" in up.text()
    assert jobs[late]["status"] == "succeeded" and jobs[late]["attempts"] == 1, jobs[late]
    assert _events(jobs[late]) == ["queued", "running", "succeeded"], jobs[late]["history"]
    stopped = f"{socket.gethostname()}:{worker.pid}"
    assert jobs[late]["worker"] not in (stopped, worker_ref(stopped)), jobs[late]


def test_stopping_rerankd_up_waits_for_the_drain_and_the_job_keeps_its_attempts(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "data"
    env = up_env(RERANKD_DRAIN_S="2")
    up = start_up(tmp_path, port, data, env)
    try:
        job_id = up.submit("interrupted sleep=8")
        up.wait([job_id], {"running"}, timeout=60)
    finally:
        code = stop_up(up)
    log = up.text()
    assert code == 0, log[-4000:]
    assert "the worker's running jobs get 2s to finish (RERANKD_DRAIN_S)" in log
    assert "stopping worker (pid" in log and "killed if still running after 32s" in log
    assert "did not stop in" not in log and f"job {job_id}: handed back to its queue" in log

    again = start_up(tmp_path, port, data, env, name="up-again")  # same data directory: the job is kept
    try:
        job = again.wait([job_id], FINAL, timeout=120)[job_id]
    finally:
        assert stop_up(again) == 0, again.text()[-4000:]
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert _events(job) == ["queued", "running", "handed", "running", "succeeded"], job["history"]


def test_with_the_default_drain_a_running_job_finishes_before_rerankd_up_exits(tmp_path: Path) -> None:
    """The defaults (RERANKD_DRAIN_S 30 s, stop timeout 60 s): SIGTERM during a 6 s job lets it finish
    on the stopping worker, once, attempt 1; nothing is killed."""
    port, data = free_port(), tmp_path / "data"
    env = up_env()
    up = start_up(tmp_path, port, data, env)
    try:
        job_id = up.submit("default drain sleep=6")
        up.wait([job_id], {"running"}, timeout=60)
    finally:
        code = stop_up(up)
    log = up.text()
    assert code == 0, log[-4000:]
    assert "the worker's running jobs get 30s to finish (RERANKD_DRAIN_S)" in log
    assert "killed if still running after 60s" in log and "did not stop in" not in log
    again = start_up(tmp_path, port, data, env, name="up-again")
    try:
        job = again.wait([job_id], FINAL, timeout=60)[job_id]
    finally:
        assert stop_up(again) == 0, again.text()[-4000:]
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert _events(job) == ["queued", "running", "succeeded"], job["history"]
