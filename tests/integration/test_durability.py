"""``rerankd up`` under crashes, with the DEFAULT timing settings (lease 30 s, reaper every 5 s,
visibility timeout 420 s): nothing accepted is lost, every job succeeds exactly once.

The worker hosts :class:`~tests.support.engines.SleepEngine` (``sleep=N`` in the query),
so job lengths are under the test's control.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rerankd.launchers.net import free_port
from tests.support.engines import NO_SUCH_ENGINE
from tests.support.stack import REPO
from tests.support.up import Up, start_up, stop_up, up_env

pytestmark = pytest.mark.integration

FINAL = {"succeeded", "failed", "cancelled", "expired"}


@pytest.fixture
def up_stack(tmp_path: Path) -> Iterator[Up]:
    up = start_up(tmp_path, free_port(), tmp_path / "data", up_env())
    try:
        yield up
    finally:
        stop_up(up)


def _events(job: dict[str, Any]) -> list[tuple[float, str]]:
    return [(float(h.split(" ")[0]), h.split(" ")[1]) for h in job["history"]]


def _assert_succeeded_once(jobs: dict[str, dict[str, Any]]) -> None:
    for job_id, job in jobs.items():
        assert job["status"] == "succeeded", (job_id, job)
        assert [e for _, e in _events(job)].count("succeeded") == 1, job


def test_kill_9_of_worker_and_of_redis_loses_no_job(up_stack: Up) -> None:
    up = up_stack
    # 1. kill -9 of the worker while three jobs run: restarted by `rerankd up`; the jobs come back
    #    from their expired leases (the reaper, default settings) and succeed once each.
    running = [up.submit(f"job {i} sleep=5") for i in range(3)]
    up.wait(running, {"running"}, timeout=60)
    worker = up.children()["worker"]
    worker.kill()
    killed_at = time.time()
    queued = [up.submit(f"late {i} sleep=1") for i in range(2)]  # accepted while no worker runs
    jobs = up.wait(running + queued, FINAL, timeout=150)
    _assert_succeeded_once(jobs)
    for job_id in running:
        job = jobs[job_id]
        assert job["attempts"] == 2, job
        restarted = [t for t, e in _events(job) if e == "running"][1]
        assert restarted - killed_at < 60, f"reclaimed {restarted - killed_at:.0f}s after the kill: {job['history']}"
        assert "requeued" in [e for _, e in _events(job)], job["history"]
    assert f"worker (pid {worker.pid}) exited with code -9; restarting in" in up.text()

    # 2. kill -9 of Redis while jobs run and wait: Valkey is restarted from its append-only file,
    #    the same worker process reconnects, and every job finishes once.
    worker = up.children()["worker"]
    jobs_before = [up.submit(f"redis {i} sleep=3") for i in range(3)] + [up.submit("queued sleep=1")]
    up.wait(jobs_before[:1], {"running"}, timeout=60)
    up.children()["valkey"].kill()  # appendfsync always: every accepted job is on disk
    jobs = up.wait(jobs_before, FINAL, timeout=120)
    _assert_succeeded_once(jobs)
    assert worker.is_running() and up.children()["worker"].pid == worker.pid, "the worker did not survive"
    assert up.proc.poll() is None


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def test_sigkill_of_up_leaves_nothing_and_accepted_jobs_survive_a_restart(tmp_path: Path) -> None:
    env = up_env(RERANKD_MODELS='["ghost"]')  # a model no worker hosts: its jobs stay queued
    port, data = free_port(), tmp_path / "data"
    up = start_up(tmp_path, port, data, env)
    try:
        job_id = up.submit("kept across restarts", model="ghost", key="k-1")
        # a second stack on the same data directory is refused (one server per directory)
        other = subprocess.run(
            [sys.executable, "-m", "rerankd.cli", "up", "--port", str(free_port()), "--data-dir", str(data)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode != 0 and "in use by another rerankd up" in other.stdout + other.stderr
        pids = [p.pid for p in psutil.Process(up.proc.pid).children(recursive=True)]
        assert len(pids) >= 3
        up.proc.kill()
        up.proc.wait()
        deadline = time.monotonic() + 30
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(pids) == [], f"left behind: {[psutil.Process(p).cmdline() for p in _alive(pids)]}"
    finally:
        stop_up(up)

    again = start_up(tmp_path, port, data, env, name="up-again")  # the same port is free again
    try:
        job = again.job(job_id)
        assert job["status"] == "queued" and job["model"] == "ghost"
        assert again.submit("kept across restarts", model="ghost", key="k-1") == job_id
    finally:
        assert stop_up(again) == 0, again.text()[-4000:]


def test_busy_port_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "rerankd.cli", "up", "--port", str(port), "--ephemeral"],
            env=up_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr and "--port" in out.stderr, out.stderr


def test_a_worker_that_cannot_start_stops_up_instead_of_restarting(tmp_path: Path) -> None:
    argv = ["up", "--port", str(free_port()), "--ephemeral", "--engine", NO_SUCH_ENGINE]
    out = subprocess.run(
        [sys.executable, "-m", "rerankd.cli", *argv],
        env=up_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "worker exited with code" in out.stderr and "while starting" in out.stderr
    assert "restarting in" not in out.stderr
