"""The service as local child processes, for the integration tests and the benchmarks.

:func:`find_redis` gives a Redis URL (``RERANKD_REDIS_URL``, else 127.0.0.1:6379 when it
answers, else a private Valkey server).  :class:`LocalStack` starts workers (one per model,
``python -m rerankd.worker``) and the API (``python -m rerankd.api``) with a given environment,
each logging to a file, on the one :class:`~rerankd.launchers.process.Supervisor` (no
restarts: tests kill workers on purpose); they die with the launching process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from rerankd.jobs.redact import worker_ref
from rerankd.launchers.net import reachable, wait_http
from rerankd.launchers.process import ChildSpec, Supervisor, python_child, stop_process
from rerankd.launchers.valkey import ValkeyProcess, start_valkey

__all__ = ["LocalStack", "find_redis"]


def find_redis() -> tuple[str, ValkeyProcess | None]:
    """``(url, server)``: ``RERANKD_REDIS_URL``, else 127.0.0.1:6379 when reachable, else a
    private Valkey server (returned, to stop)."""
    if os.environ.get("RERANKD_REDIS_URL"):
        return os.environ["RERANKD_REDIS_URL"], None
    if reachable(6379):
        return "redis://127.0.0.1:6379/0", None
    server = start_valkey()
    return f"{server.connection_url}/0", server


class LocalStack:
    """Workers and an API as child processes sharing ``env`` (see the module docstring)."""

    def __init__(self, env: Mapping[str, str], logs: Path, cwd: Path | None = None) -> None:
        self.env = dict(env)
        self.logs = logs
        self.cwd = cwd
        self.supervisor = Supervisor()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""
        logs.mkdir(parents=True, exist_ok=True)

    def _start(
        self, name: str, module: str, args: Sequence[str], env: Mapping[str, str], log: str
    ) -> subprocess.Popen[bytes]:
        spec = ChildSpec(
            name,
            lambda: python_child(module, args),
            env=env,
            cwd=self.cwd,
            log_path=self.logs / log,
            restart=False,
        )
        proc = self.supervisor.start(spec)
        self.procs.append(proc)
        return proc

    def start_worker(
        self,
        name: str,
        model: str,
        engine: str,
        concurrency: int = 4,
        extra_env: Mapping[str, str] | None = None,
        args: Sequence[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker hosting ``model`` on ``engine`` (log ``worker-{name}.log``)."""
        env = {
            **self.env,
            **(extra_env or {}),
            "RERANKD_MODEL": model,
            "RERANKD_ENGINE": engine,
            "RERANKD_WORKER_CONCURRENCY": str(concurrency),
        }
        argv = list(args) if args is not None else ["--hostname", f"{name}-{secrets.token_hex(3)}@%h"]
        proc = self._start(f"worker-{name}", "rerankd.worker", argv, env, f"worker-{name}.log")
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> int:
        """SIGKILL worker ``name``; returns its pid."""
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait(10)
        return proc.pid

    def start_api(self, port: int, args: Sequence[str] = (), log: str = "api.log") -> subprocess.Popen[bytes]:
        """The API on ``127.0.0.1:port``; waits until it answers."""
        proc = self._start("api", "rerankd.api", ["--port", str(port), *args], self.env, log)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/healthz", proc)
        return proc

    def live_workers(self, headers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/healthz", headers=dict(headers or {}), timeout=10)
        return list(resp.json().get("workers", []))

    def wait_workers(
        self,
        models: Sequence[str],
        timeout: float = 240.0,
        pids: Sequence[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Wait until every model has a live worker (with one of ``pids``, if given)."""
        deadline = time.monotonic() + timeout
        missing: set[str] = set(models)
        # /healthz shows a worker as ``hostname:pid``, or (to API keys) as its opaque ``wk_`` id
        ids = {f"{socket.gethostname()}:{pid}" for pid in pids}
        ids |= {worker_ref(i) or "" for i in ids}
        while time.monotonic() < deadline:
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited ({proc.returncode}); see {self.logs}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                live = self.live_workers(headers)
                ok = {w["model"] for w in live if not pids or str(w["id"]) in ids}
                missing = set(models) - ok
                if not missing:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"no live worker for {sorted(missing)} after {timeout:.0f}s; see {self.logs}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every child, then SIGKILL what is left after ``timeout``."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.procs:
            stop_process(proc, timeout)
        for child in self.supervisor.children.values():
            if child.log_fh is not None:
                child.log_fh.close()
        self.supervisor.children.clear()
