"""The one supervisor and its children (real processes, no Redis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rerankd.launchers.net import port_in_use
from rerankd.launchers.process import ChildSpec, Supervisor, SupervisorGaveUp, python_child

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _poll_until(sup: Supervisor, cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.poll()
        if callable(cond) and cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_crashed_child_is_restarted_with_backoff_and_stopped_in_order() -> None:
    sup = Supervisor(backoff_s=0.1, max_backoff_s=0.2)
    first = sup.start(ChildSpec("a", lambda: SLEEPER))
    sup.start(ChildSpec("b", lambda: SLEEPER))
    first.kill()
    _poll_until(sup, lambda: sup.proc("a").pid != first.pid and sup.proc("a").poll() is None)
    assert sup.children["a"].restarts and sup.dead() == []
    order = list(reversed(sup.children))
    sup.stop_all()
    assert order == ["b", "a"] and sup.children == {}


def test_a_child_that_keeps_crashing_makes_the_supervisor_give_up() -> None:
    sup = Supervisor(backoff_s=0.01, max_backoff_s=0.01, max_restarts=3)
    sup.start(ChildSpec("crash", lambda: [sys.executable, "-c", "raise SystemExit(3)"]))
    with pytest.raises(SupervisorGaveUp, match="crash exited with code 3 after 3 restarts"):
        _poll_until(sup, lambda: False)
    sup.stop_all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_sigkilled_launcher() -> None:
    code = (
        "import sys, time\n"
        "from rerankd.launchers.process import python_child, spawn\n"
        "a = spawn(sys.argv[1:])\n"
        "b = spawn(python_child('timeit', ['-n', '1', '-r', '1', 'import time; time.sleep(120)']))\n"
        "print(a.pid, b.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code, *SLEEPER], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    pids = [int(x) for x in launcher.stdout.readline().split()]
    time.sleep(0.5)
    launcher.kill()
    launcher.wait()
    assert all(_gone(pid) for pid in pids)


def test_a_python_child_notices_its_parent_is_gone_without_a_death_signal() -> None:
    code = (
        "import os, subprocess, sys, time\n"
        "argv = [sys.executable, '-m', 'rerankd.launchers.child', str(os.getpid()), 'timeit',\n"
        "        '-n', '1', '-r', '1', 'import time; time.sleep(120)']\n"
        "child = subprocess.Popen(argv, start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    time.sleep(1.0)
    launcher.kill()
    launcher.wait()
    assert _gone(pid)


def test_python_child_argv_and_busy_port() -> None:
    argv = python_child("rerankd.api", ["--port", "1"])
    assert argv[1:4] == ["-m", "rerankd.launchers.child", str(os.getpid())] and argv[4:] == [
        "rerankd.api",
        "--port",
        "1",
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_in_use("127.0.0.1", s.getsockname()[1])
