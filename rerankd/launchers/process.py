"""Child processes that never outlive their launcher, and the one supervisor that runs them.

:func:`spawn` starts a child in a session (and process group) of its own, so a Ctrl-C in the
terminal reaches only the launcher, which stops the children in order.  On Linux the child also
asks the kernel for ``SIGTERM`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set between
fork and exec); Python children are started through :mod:`rerankd.launchers.child`, whose
thread also watches ``getppid()`` and ends the process if the launcher is gone (any OS), so a
``kill -9`` of the launcher leaves nothing behind.

Note: the kernel sends the death signal when the *thread* that forked the child ends, so
:class:`Supervisor` must be driven from one long-lived thread (the main thread).

:class:`Supervisor` starts named :class:`ChildSpec` processes, restarts the ones that exit
(with exponential backoff, bounded in delay and count, each restart logged) and stops them in
reverse start order.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ChildSpec",
    "Supervisor",
    "SupervisorGaveUp",
    "python_child",
    "spawn",
    "stop_process",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _death_signal_preexec(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking for SIGTERM when ``parent`` dies (Linux; elsewhere a no-op)."""
    libc: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return preexec


def python_child(module: str, args: Sequence[str] = (), parent: int | None = None) -> list[str]:
    """argv running ``python -m module args`` under :mod:`rerankd.launchers.child`, which ends the
    process when ``parent`` (default: this process) is gone."""
    return [
        sys.executable,
        "-m",
        "rerankd.launchers.child",
        str(parent or os.getpid()),
        module,
        *args,
    ]


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log_file: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, dying with this process (see the module docstring).
    Output goes to ``log_file`` (default: inherited)."""
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file is not None else None,
        start_new_session=True,
        preexec_fn=_death_signal_preexec(os.getpid()),
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0, name: str = "") -> int:
    """SIGTERM the child's process group, SIGKILL it after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in %.0fs; killing it", name or proc.args, proc.pid, timeout)
    _signal_group(proc, signal.SIGKILL)  # anything left in its group (the child made it its own)
    return proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(sig)


@dataclass
class ChildSpec:
    """A process the supervisor keeps running.  ``argv`` is called at each (re)start."""

    name: str
    argv: Callable[[], Sequence[str]]
    env: Mapping[str, str] | None = None
    cwd: str | Path | None = None
    log_path: Path | None = None
    restart: bool = True
    stop_timeout: float = 30.0


class SupervisorGaveUp(RuntimeError):
    """A child kept crashing: more restarts than allowed in the window."""


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes]
    started: float
    restarts: list[float] = field(default_factory=list)
    next_start: float | None = None
    log_fh: IO[bytes] | None = None


class Supervisor:
    """Starts, watches, restarts and stops :class:`ChildSpec` processes (see the module docstring).

    Restart delays double from ``backoff_s`` up to ``max_backoff_s``; a child that ran for
    ``stable_s`` counts as healthy again; more than ``max_restarts`` restarts of one child within
    ``window_s`` raise :class:`SupervisorGaveUp` from :meth:`poll`.
    """

    def __init__(
        self,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_restarts: int = 10,
        window_s: float = 600.0,
        stable_s: float = 60.0,
    ) -> None:
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.stable_s = stable_s
        self.children: dict[str, _Child] = {}

    def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        """Start ``spec`` now (replacing a stopped child of the same name)."""
        old = self.children.get(spec.name)
        fh = spec.log_path.open("ab") if spec.log_path is not None else None
        proc = spawn(spec.argv(), env=spec.env, cwd=spec.cwd, log_file=fh)
        child = _Child(spec=spec, proc=proc, started=time.monotonic(), log_fh=fh)
        if old is not None:
            child.restarts = old.restarts
            if old.log_fh is not None:
                old.log_fh.close()
        self.children[spec.name] = child
        log.info("started %s (pid %d)", spec.name, proc.pid)
        return proc

    def proc(self, name: str) -> subprocess.Popen[bytes]:
        return self.children[name].proc

    def dead(self) -> list[str]:
        """``"name exited with code N"`` for every child that is not running."""
        return [
            f"{n} exited with code {c.proc.returncode}" for n, c in self.children.items() if c.proc.poll() is not None
        ]

    def poll(self) -> None:
        """Restart exited children whose backoff has passed (call it often, from one thread)."""
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if child.proc.poll() is None or not child.spec.restart:
                continue
            if child.next_start is None:
                if now - child.started >= self.stable_s:
                    child.restarts.clear()
                child.restarts = [t for t in child.restarts if now - t < self.window_s]
                if len(child.restarts) >= self.max_restarts:
                    raise SupervisorGaveUp(
                        f"{name} exited with code {child.proc.returncode} after {len(child.restarts)} restarts "
                        f"in {self.window_s:.0f}s; giving up"
                    )
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** len(child.restarts))
                child.next_start = now + delay
                log.error(
                    "%s (pid %d) exited with code %s; restarting in %.1fs (restart %d of at most %d per %.0fs)",
                    name,
                    child.proc.pid,
                    child.proc.returncode,
                    delay,
                    len(child.restarts) + 1,
                    self.max_restarts,
                    self.window_s,
                )
            elif now >= child.next_start:
                child.restarts.append(now)
                self.start(child.spec)

    def stop(self, name: str) -> int:
        """Stop one child (no restart); returns its exit code."""
        child = self.children.pop(name)
        if child.proc.poll() is None:
            log.info(
                "stopping %s (pid %d); killed if still running after %gs", name, child.proc.pid, child.spec.stop_timeout
            )
        code = stop_process(child.proc, child.spec.stop_timeout, name)
        if child.log_fh is not None:
            child.log_fh.close()
        log.info("%s stopped", name)
        return code

    def stop_all(self) -> None:
        """Stop every child, the last started first."""
        for name in reversed(list(self.children)):
            self.stop(name)
