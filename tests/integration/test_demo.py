"""``rerankd demo`` (what ``make demo`` runs): the whole stack runs and leaves no process behind,
after it ends and after Ctrl-C at several points.

The demo runs on a tiny configuration (2 queries, 5 candidates, the tiny random model).  Every
process it starts inherits ``_RERANKD_TREE=<token>`` from it, so :func:`rerankd.proctree.tagged`
finds them wherever they went (own sessions, re-parented orphans).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rerankd.proctree import MARKER, stop_pids, tagged

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    token: str
    lines: list[str] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            self.seen.update(tagged(self.token))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never came; output:\n{self.output}")
            time.sleep(0.2)

    def ctrl_c(self) -> None:
        """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.seen.update(tagged(self.token))
            time.sleep(0.2)
        return self.proc.wait(1)


@pytest.fixture
def demo(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Demo]:
    token = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_") or k == "RERANKD_CACHE_DIR"}
    env.update({MARKER: token, "PYTHONUNBUFFERED": "1"})
    argv = [sys.executable, "-m", "rerankd", "demo", "--model", str(tiny_model_dir)]
    argv += ["--limit", "2", "--top-k", "5", "--out-dir", str(tmp_path / "out")]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a shell gives a foreground job
    )
    d = Demo(proc, token)
    reader = threading.Thread(target=d.read, daemon=True)
    reader.start()
    try:
        yield d
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_pids(tagged(token), timeout=5)  # never leave a stack behind, even when a test fails
        reader.join(5)


def test_demo_runs_the_main_job_and_leaves_no_process(demo: Demo) -> None:
    code = demo.finish()
    out = demo.output
    assert code == 0, out
    assert "nDCG@10" in out and "first stage" in out
    assert "rerank: 100%" in out  # the progress bar of `rerankd rerank --queue`
    assert "found again by its Idempotency-Key" in out
    assert "status    succeeded   attempts 1" in out
    assert "rank  docid" in out and "timings   waited in the queue" in out
    assert "no process left" in out
    assert len(demo.seen) >= 4, f"expected rerankd up, Valkey, worker, API; saw {demo.seen}"
    assert tagged(demo.token) == []


@pytest.mark.parametrize("when", ["starting", "queue"])
def test_ctrl_c_stops_the_stack_and_leaves_no_process(demo: Demo, when: str) -> None:
    if when == "starting":
        demo.wait_for("== starting the stack")
        time.sleep(2)  # `rerankd up` is starting its children
    else:
        demo.wait_for("== the queries as jobs")
        time.sleep(1)
    assert demo.seen, "the stack's processes never appeared"
    demo.ctrl_c()
    if when == "queue":  # an impatient second Ctrl-C while the stack stops
        demo.wait_for("== stopping the stack", timeout=60)
        demo.ctrl_c()
    code = demo.finish()
    out = demo.output
    assert code == 130, out
    assert "interrupted" in out and "no process left" in out, out
    assert tagged(demo.token) == []
