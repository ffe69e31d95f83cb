"""Loopback ports and readiness waits shared by every launcher, test and bench (one home each)."""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import time
from collections.abc import Callable

import httpx

__all__ = ["free_port", "port_in_use", "reachable", "wait_http"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound (someone listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 60.0,
    *,
    status: int | None = None,
    gone: Callable[[], str | None] | None = None,
    interval: float = 0.2,
) -> None:
    """Wait until ``url`` answers (with ``status`` when given, e.g. 200 for ``/healthz``).

    Raises :class:`RuntimeError` when ``proc`` exits or ``gone()`` returns a reason first, and
    :class:`TimeoutError` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with code {proc.returncode}")
        reason = gone() if gone is not None else None
        if reason:
            raise RuntimeError(f"{url}: {reason}")
        with contextlib.suppress(httpx.HTTPError):
            got = httpx.get(url, timeout=2.0).status_code
            if status is None or got == status:
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer{f' {status}' if status else ''} in {timeout:.0f}s")
        time.sleep(interval)
