"""Handles on the whole service the integration tests run (started by tests/integration/conftest.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rerankd.launchers.local import LocalStack

REPO = Path(__file__).resolve().parents[2]
KEYS = {"alice": "key-alice", "bob": "key-bob"}
METRICS_KEY = "key-metrics"  # RERANKD_METRICS_KEY: /metrics with every tenant's series
WEBHOOK_SECRET = "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldA=="  # the shared fallback (bob's)
# alice's own webhook secrets, mid-rotation: both sign her callbacks
ALICE_WEBHOOK_SECRETS = (
    "whsec_" + "YWxpY2UtbmV3LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm",
    "whsec_" + "YWxpY2Utb2xkLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm",
)


@dataclass
class Service:
    """Handles on the running service."""

    url: str
    redis_url: str
    prefix: str
    env: dict[str, str]
    logs: Path
    tiny_model: str
    tiny_vllm_model: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stack: LocalStack | None = None
    """The processes (rerankd.launchers.local); shares ``workers`` and ``procs``."""

    def _stack(self) -> LocalStack:
        if self.stack is None:
            self.stack = LocalStack(self.env, self.logs, cwd=REPO)
            self.stack.workers, self.stack.procs = self.workers, self.procs
            self.stack.url = self.url
        return self.stack

    def headers(self, owner: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[owner]}"}

    def metrics_headers(self) -> dict[str, str]:
        """``GET /metrics`` as Prometheus reads it (the metrics key: every tenant's series)."""
        return {"Authorization": f"Bearer {METRICS_KEY}"}

    def client(self, owner: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(owner), timeout=300)

    def start_worker(
        self, name: str, model: str, engine: str, concurrency: int = 4, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self._stack().start_worker(name, model, engine, concurrency, extra_env)

    def kill_worker(self, name: str) -> int:
        return self._stack().kill_worker(name)

    def live_workers(self) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/healthz", headers=self.headers(), timeout=10)  # workers: with a key
        return list(resp.json().get("workers", []))

    def wait_workers(self, models: Sequence[str], timeout: float = 240.0, pids: Sequence[int] = ()) -> None:
        """Wait until every model has a live worker (with one of ``pids``, if given)."""
        self._stack().wait_workers(models, timeout, pids, headers=self.headers())

    def wait_job(
        self, job_id: str, owner: str = "alice", timeout: float = 120.0, until: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Poll a job until it is final (or in one of ``until``)."""
        final = set(until) or {"succeeded", "failed", "cancelled", "expired"}
        deadline = time.monotonic() + timeout
        while True:
            job = httpx.get(
                f"{self.url}/v1/jobs/{job_id}?include=history", headers=self.headers(owner), timeout=30
            ).json()
            if job["status"] in final or time.monotonic() > deadline:
                return dict(job)
            time.sleep(0.1)
