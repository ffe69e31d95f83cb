"""``python -m rerankd.launchers.child PARENT_PID MODULE [ARGS...]``: run ``python -m MODULE ARGS``
and end it when process ``PARENT_PID`` (its launcher) is gone.

A daemon thread polls ``os.getppid()``: once it differs from ``PARENT_PID`` the launcher died
(even by ``kill -9``), so the process sends itself SIGTERM (a graceful stop: the worker's warm
shutdown, uvicorn's shutdown) and exits hard if it is still alive after a grace period.  On
Linux the launcher also sets ``PR_SET_PDEATHSIG`` (:mod:`rerankd.launchers.process`); this
watch covers other systems and the window before ``prctl`` takes effect.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import sys
import threading
import time

__all__ = ["watch_parent"]

log = logging.getLogger(__name__)

GRACE_S = 10.0
"""Seconds between the SIGTERM a child sends itself and its hard exit."""


def watch_parent(parent: int, interval_s: float = 0.5, grace_s: float = GRACE_S) -> threading.Thread:
    """Start a daemon thread that stops this process when ``parent`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        log.warning("launcher (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="rerankd-parent-watch", daemon=True)
    thread.start()
    return thread


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m rerankd.launchers.child PARENT_PID MODULE [ARGS...]")
    parent, module, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if os.getppid() != parent:
        raise SystemExit(f"launcher (pid {parent}) is already gone")
    watch_parent(parent)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
