"""CLI runs as subprocesses: start one, SIGKILL it mid-run, and check its journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.stack import REPO


def journaled(journal: Path) -> int:
    if not journal.exists():
        return 0
    return max(0, journal.read_bytes().count(b"\n") - 1)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def kill_after(proc: subprocess.Popen[bytes], journal: Path, n: int, timeout: float = 300) -> int:
    """SIGKILL ``proc`` as soon as at least ``n`` queries are journaled; return how many were."""
    deadline = time.monotonic() + timeout
    while journaled(journal) < n:
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {n} queries were journaled")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the journal")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return journaled(journal)


def check_journal_once(journal: Path, n: int) -> None:
    lines = journal.read_text().splitlines()
    assert "rerankd_journal" in json.loads(lines[0])
    indices = [json.loads(line)["index"] for line in lines[1:]]
    assert sorted(indices) == list(range(n)), "each query journaled exactly once"


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
