"""Finding and stopping every process a command started, however it detached (Linux ``/proc``).

A process tree is tagged with an environment variable (``MARKER=<token>``) that every
descendant inherits, so processes that left the tree (new sessions, re-parented orphans)
are still found by :func:`tagged`.  On systems without ``/proc`` the functions find nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MARKER", "alive", "stop_pids", "tagged"]

MARKER = "_RERANKD_TREE"
"""Environment variable naming the tree a process belongs to (not a ``RERANKD_*`` setting)."""

_PROC = Path("/proc")


def tagged(token: str, marker: str = MARKER, exclude: Iterable[int] = ()) -> list[int]:
    """Pids of live processes whose environment holds ``marker=token`` (zombies excluded)."""
    needle = f"{marker}={token}".encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in _PROC.glob("[0-9]*"):
        pid = int(entry.name)
        if pid in skip:
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in env.split(b"\0") and alive(pid):
            found.append(pid)
    return sorted(found)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop_pids(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still alive after ``timeout``; the pids that needed SIGKILL."""
    pids = [p for p in pids if alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    killed = [p for p in pids if alive(p)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return killed
