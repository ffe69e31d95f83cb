"""``bench/service.py --issue20``: the issue-20 figures, in one run.

(1) Broker overhead: with the echo engine, on each broker of ``--brokers`` (``redis``: the job
store's Redis, the default; ``amqp``: RabbitMQ in a vhost of its own, added with ``rabbitmqctl``
and deleted afterwards, see ``tests/support/rabbitmq.py``), the p50 of a sync rerank at
concurrency 1 (and over the in-process call), jobs/s at concurrency 16 and where the time goes
(client->created, created->started, started->finished, finished->client), side by side.

(2) Fairness: tenant B's sync reranks (p50, p99) alone, during tenant A's batch, and during
tenant A's flood (``--flood`` concurrent sync ``/v2/rerank`` callers that loop, from a separate
process so that B's client measures B only, keeping that many interactive jobs in flight;
quotas are off), for each engine of ``--fair-engines`` (``echo`` and ``--model``); workers run
``--fair-worker-concurrency`` jobs at once (8, ``rerankd up``'s default, 1 interactive slot).
The ratio p99(during) / p99(alone) of each (target <= 2x), with the per-stage p50 and p99.
A's batch is cancelled once B is done (the figures need it running only while B runs).

``uptime`` is printed before and after each part.  ``--sections overhead`` or ``fairness`` runs
one half.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.service import (
    PASSAGES,
    QUERY,
    ROOT,
    STAGES,
    EchoEngine,
    Row,
    Stack,
    auth,
    batch_file,
    run_direct,
    run_service,
    stage_ms,
)

Samples = list[tuple[str, float, float]]


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--issue20 (bench/_service_fairness.py)")
    g.add_argument("--issue20", action="store_true", help="only the issue-20 figures: brokers side by side, fairness")
    g.add_argument("--sections", default="overhead,fairness", help="--issue20 parts to run")
    g.add_argument("--brokers", default="redis,amqp", help="brokers for the overhead part (redis, amqp)")
    g.add_argument("--amqp-url", help="RabbitMQ server (a vhost is added); default: tests/support/rabbitmq.py's pick")
    g.add_argument("--fair-engines", default="echo,model", help="'echo', 'echo-<N>ms', 'model' (= --model)")
    g.add_argument("--fair-worker-concurrency", type=int, default=8, help="fairness workers' concurrency")
    g.add_argument("--flood", type=int, default=100, help="tenant A's concurrent sync callers (0: skip)")
    g.add_argument("--model-fair-requests", type=int, default=20, help="tenant B's requests on --model")
    g.add_argument("--model-documents", type=int, default=5, help="passages per rerank on --model (A's and B's)")
    g.add_argument("--model-fair-concurrency", type=int, default=1, help="tenant B's concurrency on --model")
    g.add_argument("--model-batch-lines", type=int, default=300, help="tenant A's batch on --model")


def uptime(label: str) -> None:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"[uptime {label}] {out}", flush=True)


# --------------------------------------------------------------------------- (1) brokers


@contextlib.contextmanager
def amqp_vhost(server: str | None, tmp: Path) -> Iterator[str]:
    """A RabbitMQ vhost of this run (its URL), deleted afterwards."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.support.rabbitmq import Rabbit, find_rabbit
    except ImportError:  # an installed copy without tests/: the system server, guest/guest
        with _vhost_by_ctl() as url:
            yield url
        return
    if server:
        from urllib.parse import urlsplit

        u = urlsplit(server)
        rabbit, node = Rabbit(u.hostname or "127.0.0.1", u.port or 5672, u.username or "guest", u.password or ""), None
    else:
        rabbit, node = find_rabbit(tmp)
    try:
        with rabbit.vhost(f"rerankd-bench-{time.time_ns() % 10**8}") as url:
            yield url
    finally:
        if node is not None:
            node.stop()


@contextlib.contextmanager
def _vhost_by_ctl() -> Iterator[str]:
    name = f"rerankd-bench-{time.time_ns() % 10**8}"
    subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True)
    try:
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], check=True)
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], check=False, capture_output=True)


@dataclass
class BrokerRun:
    broker: str
    rows: dict[int, Row] = field(default_factory=dict)
    stages: dict[int, dict[str, float]] = field(default_factory=dict)


def broker_run(broker: str, args: argparse.Namespace, extra_env: dict[str, str]) -> BrokerRun:
    """Echo rows at c=1 and c=16 on a stack whose broker is ``extra_env``'s (none: Redis)."""
    out = BrokerRun(broker)
    workers = {"echo": ("echo", "bench.service:EchoEngine", args.echo_workers_threads)}
    stack = Stack(workers, args.logs / f"broker-{broker}", extra_env)
    try:
        stack.start()

        async def go() -> None:
            for c in (1, 16):
                samples: Samples = []
                out.rows[c] = await run_service(
                    stack.url, "echo", "echo", c, args.echo_requests, warmup=200, samples=samples
                )
                out.stages[c] = await stage_ms(stack.redis_url, stack.prefix, samples)

        asyncio.run(go())
    finally:
        stack.stop()
    return out


def overhead(args: argparse.Namespace) -> None:
    brokers = [b for b in args.brokers.split(",") if b]
    direct = asyncio.run(run_direct(EchoEngine(), "echo", 1, args.echo_requests, warmup=100)).pct(0.5)
    runs: list[BrokerRun] = []
    for broker in brokers:
        uptime(f"before broker={broker}")
        if broker == "redis":
            runs.append(broker_run(broker, args, {}))
        elif broker == "amqp":
            with tempfile.TemporaryDirectory() as tmp, amqp_vhost(args.amqp_url, Path(tmp)) as url:
                print(f"RabbitMQ vhost: {url.rsplit('@', 1)[-1]}", flush=True)
                runs.append(broker_run(broker, args, {"RERANKD_BROKER_URL": url}))
        else:
            raise SystemExit(f"--brokers: unknown broker {broker!r} (redis, amqp)")
        uptime(f"after broker={broker}")
    print(f"\n(1) echo engine, {args.echo_requests} requests per row; in-process p50 {direct:.2f} ms")
    print(f"{'':<34}" + "".join(f"{r.broker:>10}" for r in runs))
    lines: list[tuple[str, Any]] = [
        ("c=1 p50 ms", lambda r: r.rows[1].pct(0.5)),
        ("c=1 overhead p50 ms (- in-process)", lambda r: r.rows[1].pct(0.5) - direct),
        ("c=1 p99 ms", lambda r: r.rows[1].pct(0.99)),
        ("c=16 jobs/s", lambda r: r.rows[16].rps),
        ("c=16 p50 ms", lambda r: r.rows[16].pct(0.5)),
        ("c=16 p99 ms", lambda r: r.rows[16].pct(0.99)),
    ]
    for c in (1, 16):
        lines += [(f"c={c} p50 ms {s}", lambda r, c=c, s=s: r.stages[c].get(s, float("nan"))) for s in STAGES]
    for label, get in lines:
        print(f"{label:<34}" + "".join(f"{get(r):>10.2f}" for r in runs))
    print(f"{'errors':<34}" + "".join(f"{r.rows[1].errors + r.rows[16].errors:>10}" for r in runs))
    print("targets (issue 20, on Redis, quiet machine): c=1 overhead <= 3 ms, c=16 >= 450 jobs/s")


# --------------------------------------------------------------------------- (2) fairness


async def in_flight(stack: Stack) -> dict[str, int]:
    from rerankd.jobs import JobStore

    store = JobStore.from_url(stack.redis_url, stack.prefix)
    try:
        return await store.in_flight()
    finally:
        await store.aclose()


async def drain(stack: Stack, timeout: float = 300.0) -> float:
    """Cancel tenant A's interactive jobs left by the flood's callers and wait until A holds no
    job in flight (a cancelled batch's running jobs finish)."""
    from rerankd.jobs import JobStore

    t0 = time.perf_counter()
    store = JobStore.from_url(stack.redis_url, stack.prefix)
    try:
        ids = [i.decode() for i in await store.r.zrange(store.keys.inflight("tenant-a"), 0, -1)]
    finally:
        await store.aclose()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers=auth("tenant-a")) as http:
        for job_id in ids:
            await http.post(f"/v1/jobs/{job_id}/cancel")
    while time.perf_counter() - t0 < timeout:
        if not any(k.startswith("tenant-a") and n for k, n in (await in_flight(stack)).items()):
            break
        await asyncio.sleep(0.5)
    return time.perf_counter() - t0


@dataclass
class Phase:
    name: str
    row: Row
    samples: Samples
    note: str = ""


@dataclass
class Load:
    """Tenant B's calls (``c`` at once, ``n`` measured) and A's work, ``docs`` passages each."""

    model: str
    c: int
    n: int
    docs: int


async def b_run(stack: Stack, w: Load, name: str, warmup: int = 0) -> Phase:
    samples: Samples = []
    row = await run_service(stack.url, w.model, f"B {name}", w.c, w.n, warmup, samples=samples, documents=w.docs)
    return Phase(name, row, samples)


async def during_batch(stack: Stack, w: Load, lines: int) -> Phase:
    """B's calls while A's ``lines``-line batch runs; the batch is cancelled when B is done."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=3600, headers=auth("tenant-a")) as http:
        t0 = time.perf_counter()
        resp = await http.post(
            "/v1/batches", content=batch_file(lines, w.model, w.docs), headers={"content-type": "application/jsonl"}
        )
        if resp.status_code != 202:
            raise RuntimeError(f"batch: HTTP {resp.status_code}: {resp.text[:300]}")
        batch_id = resp.json()["id"]
        await asyncio.sleep(0.5)  # let the workers' batch slots fill
        t_b = time.perf_counter()
        phase = await b_run(stack, w, "during batch")
        t_end = time.perf_counter()
        status = (await http.get(f"/v1/batches/{batch_id}")).json()
        done = status.get("status")
        await http.post(f"/v1/batches/{batch_id}/cancel")
    t_drain = await drain(stack)
    finished = status.get("finished")
    warn = "" if done != "completed" else "; WARNING: it ended before B did (raise the lines)"
    phase.note = (
        f"A's batch of {lines} lines: {finished} done when B ended ({t_end - t0:.1f}s after submit, "
        f"B ran {t_end - t_b:.1f}s), status {done}{warn}; cancelled, drained in {t_drain:.1f}s"
    )
    return phase


async def during_flood(stack: Stack, w: Load, flood: int) -> Phase:
    """B's calls while A's ``flood`` callers (a child process) keep that many sync jobs in flight."""
    cmd = [sys.executable, "-m", "bench._service_fairness", "flood", stack.url, w.model, str(flood), str(w.docs)]
    child = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held: list[int] = []
    try:
        t0 = time.perf_counter()
        # until A holds (nearly) all of its jobs; a fast engine finishes them as they come: 15 s at most
        while time.perf_counter() - t0 < 15:
            if (await in_flight(stack)).get("tenant-a", 0) >= 0.9 * flood or child.poll() is not None:
                break
            await asyncio.sleep(0.2)
        t_ramp = time.perf_counter() - t0
        await asyncio.sleep(2.0)  # A's callers in their steady loop
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                held.append((await in_flight(stack)).get("tenant-a", 0))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)

        sampler = asyncio.create_task(sample())
        phase = await b_run(stack, w, "during flood")
        stop.set()
        await sampler
    finally:
        out, _ = await asyncio.to_thread(child.communicate, "", 120)
    a = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    t_drain = await drain(stack)
    held_s = f"min {min(held)}, median {statistics.median(held):.0f}" if held else "not sampled"
    phase.note = (
        f"A's flood of {flood} callers: {t_ramp:.1f}s to ramp up; A's jobs in flight while B ran: {held_s}; "
        f"A: {a.get('done')} calls answered ({a.get('rps', 0):.1f}/s), p50 {a.get('p50_ms', 0):.0f} ms, "
        f"errors {a.get('errors')}; drained in {t_drain:.1f}s"
    )
    return phase


async def flood_main(url: str, model: str, lanes: int, docs: int) -> None:
    """The flood child: ``lanes`` sync callers as tenant A until stdin closes; prints a JSON summary."""
    body = {"model": model, "query": QUERY, "documents": PASSAGES[:docs]}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    lat: list[float] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=lanes + 4, max_keepalive_connections=lanes + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits, headers=auth("tenant-a")) as http:

        async def lane() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/v2/rerank", json=body)
                    problem = "" if resp.status_code == 200 else f"HTTP {resp.status_code}"
                except httpx.HTTPError as e:
                    problem = type(e).__name__
                if not problem:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[problem] += 1
                    await asyncio.sleep(0.1)

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(lane()) for _ in range(lanes)]
        await stop.wait()
        wall = time.perf_counter() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    print(json.dumps({"done": len(lat), "errors": dict(errors), "rps": len(lat) / wall, "p50_ms": p50}), flush=True)


def fairness(args: argparse.Namespace) -> None:
    engines = [e for e in args.fair_engines.split(",") if e and (e != "model" or args.model)]
    conc = args.fair_worker_concurrency
    workers = {}
    for e in engines:
        model = args.model if e == "model" else e
        workers[model] = (model, args.model_engine if e == "model" else "bench.service:EchoEngine", conc)
    stack = Stack(workers, args.logs / "fairness")
    report: list[tuple[Load, list[Phase]]] = []
    try:
        print(f"starting the fairness stack ({', '.join(workers)}; worker concurrency {conc})...", flush=True)
        stack.start()
        for e in engines:
            real = e == "model"
            w = Load(
                args.model if real else e,
                args.model_fair_concurrency if real else args.fair_concurrency,
                args.model_fair_requests if real else args.fair_requests,
                args.model_documents if real else len(PASSAGES),
            )
            lines = args.model_batch_lines if real else args.batch_lines
            uptime(f"before fairness {w.model}")

            async def go(w: Load = w, lines: int = lines, real: bool = real) -> None:
                phases = [await b_run(stack, w, "alone", warmup=2 if real else 50)]
                if lines:
                    phases.append(await during_batch(stack, w, lines))
                if args.flood:
                    phases.append(await during_flood(stack, w, args.flood))
                for p in phases:
                    p.note = (p.note + "\n      " if p.note else "") + await stages_line(stack, p.samples)
                report.append((w, phases))

            asyncio.run(go())
            uptime(f"after fairness {w.model}")
            print_fairness(*report[-1])
    finally:
        stack.stop()


async def stages_line(stack: Stack, samples: Samples) -> str:
    p50 = await stage_ms(stack.redis_url, stack.prefix, samples, 0.5)
    p99 = await stage_ms(stack.redis_url, stack.prefix, samples, 0.99)
    return "stages ms p50/p99: " + ", ".join(f"{s} {p50[s]:.1f}/{p99[s]:.1f}" for s in STAGES if s in p50)


def print_fairness(w: Load, phases: list[Phase]) -> None:
    alone = phases[0].row
    print(f"\n(2) {w.model}: tenant B sync /v2/rerank of {w.docs} passages, c={w.c}, n={w.n} per phase")
    for p in phases:
        r = p.row
        ratio = r.pct(0.99) / alone.pct(0.99) if alone.pct(0.99) > 0 else float("nan")
        tail = "" if p is phases[0] else f"  p99 ratio {ratio:.2f}x (target <= 2x)"
        print(f"  {p.name:<13} p50 {r.pct(0.5):>9.1f} ms  p99 {r.pct(0.99):>9.1f} ms  errors {r.errors}{tail}")
        print(f"      {p.note}")
    sys.stdout.flush()


def issue20(args: argparse.Namespace) -> None:
    sections = set(args.sections.split(","))
    t0 = time.perf_counter()
    if "overhead" in sections:
        overhead(args)
    if "fairness" in sections:
        fairness(args)
    print(f"\n(issue 20 total {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__" and sys.argv[1:2] == ["flood"]:
    asyncio.run(flood_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
