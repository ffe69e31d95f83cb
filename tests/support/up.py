"""A ``rerankd up`` subprocess on the :class:`~tests.support.engines.SleepEngine` (``sleep=N`` in a
query makes its job last N seconds), for tests that stop or kill its parts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import REPO

__all__ = ["Up", "start_up", "stop_up", "up_env"]


@dataclass
class Up:
    """A running ``rerankd up`` and its log (the children's output included)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[str, psutil.Process]:
        """``valkey``, ``api`` and ``worker`` by their command lines (celery renames its process)."""
        out: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(child.cmdline())
                name = "valkey" if "valkey-server" in cmd else "api" if "rerankd.api" in cmd else "worker"
                out[name] = child
        return out

    def submit(self, query: str, model: str | None = None, key: str | None = None) -> str:
        """A job of ``query`` (``model``: another served name; ``key``: an Idempotency-Key)."""
        body: dict[str, Any] = {"query": {"text": query}, "candidates": [{"docid": "a", "text": "x"}]}
        if model:
            body["model"] = model
        headers = {"Idempotency-Key": key} if key else {}
        resp = httpx.post(f"{self.url}/v1/jobs", json=body, headers=headers, timeout=30)
        assert resp.status_code in (200, 202), resp.text
        return str(resp.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/jobs/{job_id}?include=history", timeout=30)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def wait(self, job_ids: list[str], until: set[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The jobs once all are in one of ``until`` (or as they are after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = {}
            for j in job_ids:  # 503 while a part restarts
                with contextlib.suppress(httpx.HTTPError, AssertionError):
                    jobs[j] = self.job(j)
            if all(j in jobs and jobs[j]["status"] in until for j in job_ids) or time.monotonic() > deadline:
                return jobs
            time.sleep(0.3)


def up_env(**extra: str) -> dict[str, str]:
    """This environment without ``RERANKD_*``, serving model ``slow`` on the SleepEngine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    return {**env, "PYTHONPATH": str(REPO), "RERANKD_MODEL": "slow", "RERANKD_ENGINE": SLEEP_ENGINE, **extra}


def start_up(tmp: Path, port: int, data_dir: Path, env: dict[str, str], name: str = "up") -> Up:
    """Start ``rerankd up`` and wait until it says it is ready (crashes before that stop it)."""
    log = tmp / f"{name}.log"
    with log.open("ab") as fh:
        argv = ["up", "--port", str(port), "--concurrency", "4", "--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "rerankd.cli", *argv], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
        )
    up = Up(proc, port, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if "rerankd up: ready" in up.text():
            return up
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"rerankd up did not become healthy:\n{up.text()[-4000:]}")


def stop_up(up: Up, timeout: float = 90.0) -> int:
    """SIGTERM ``rerankd up`` and wait for it (killed after ``timeout``); its exit code."""
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
    try:
        return up.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        up.proc.kill()
        return up.proc.wait()
