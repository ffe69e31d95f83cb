"""The demo's private stack: ``rerankd up`` as a child process, started, waited for and stopped
with every process it left behind (found by an environment tag, :mod:`rerankd.proctree`).

Signals: inside :func:`interruptible`, SIGTERM and SIGHUP interrupt like Ctrl-C; once stopping
has begun, :func:`shield` turns further signals into a note, so the clean-up runs to its end.
If the demo itself is killed, ``rerankd up`` gets SIGTERM from the kernel (:func:`.process.spawn`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerankd.launchers.net import free_port, wait_http
from rerankd.launchers.process import spawn
from rerankd.proctree import MARKER, stop_pids, tagged

__all__ = ["DemoStack", "demo_env", "interruptible", "run_foreground", "shield"]


def demo_env(token: str, model: str) -> dict[str, str]:
    """The children's environment: the user's minus every ``RERANKD_*`` setting, plus the demo's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_") or k == "RERANKD_CACHE_DIR"}
    env.update({"RERANKD_MODEL": model, "RERANKD_ENGINE": "hf", MARKER: token})
    env["RERANKD_JOB_DEADLINE_S"] = "3600"  # a slow or busy CPU must not fail the demo's jobs
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        pids.add(pid)
    return pids


@dataclass
class DemoStack:
    """``rerankd up`` as a child process, in a session of its own (a Ctrl-C reaches only us)."""

    env: dict[str, str]
    data_dir: Path
    log_path: Path
    worker_concurrency: int | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "rerankd", "up", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.worker_concurrency:
            argv += ["--concurrency", str(self.worker_concurrency)]
        with self.log_path.open("ab") as log:  # own session; SIGTERM when the demo dies
            self.proc = spawn(argv, env=self.env, log_file=log)

    def wait_ready(self, timeout: float) -> str | None:
        """None once ``/healthz`` answers 200 (Redis and a worker are up), else what went wrong."""
        assert self.proc is not None
        try:
            wait_http(f"{self.url}/healthz", self.proc, timeout, status=200, interval=0.5)
        except RuntimeError:
            return f"`rerankd up` exited with code {self.proc.returncode}"
        except TimeoutError:
            return f"the stack was not ready after {timeout:.0f}s"
        return None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, token: str, timeout: float) -> str:
        """Stop ``rerankd up`` (it stops its children), then anything of ours still alive."""
        notes = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                notes.append(f"`rerankd up` was still stopping after {timeout:.0f}s (jobs running): killed")
                self.proc.kill()
                self.proc.wait()
        left = tagged(token, exclude=_ancestors())
        if left:
            killed = stop_pids(left, timeout=5.0)
            notes.append(
                f"{len(left)} processes outlived `rerankd up` (pids {left}): stopped"
                + (f", {len(killed)} with SIGKILL" if killed else "")
            )
        still = tagged(token, exclude=_ancestors())
        notes.append(f"{len(still)} processes left (pids {still})" if still else "no process left")
        return "; ".join(notes)


def run_foreground(argv: list[str], env: dict[str, str]) -> int:
    """Run a ``rerankd`` command in the foreground; on an interrupt let it stop, then re-raise."""
    proc = subprocess.Popen([sys.executable, "-m", "rerankd", *argv], env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        shield()
        try:  # a terminal's Ctrl-C reached it too; a signal sent to the demo alone did not
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def _interrupt(signum: int, frame: Any) -> None:
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)


def shield() -> None:
    """From now on a signal only says that we are already stopping."""

    def busy(signum: int, frame: Any) -> None:
        del frame
        print(f"({signal.Signals(signum).name}: already stopping the stack, one moment)", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, busy)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt like Ctrl-C; the handlers are restored afterwards."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.getsignal(s) for s in sigs}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
