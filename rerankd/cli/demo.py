"""``rerankd demo``: the service's main job end to end, on a private stack it removes again.

1. ``rerankd up`` as a child process on a free loopback port, with a temporary data folder
   and only the demo's settings: the user's ``RERANKD_*`` variables, config file, Redis and
   data are never used (the model cache is read).
2. The queries go through the queue as jobs: ``rerankd rerank --queue`` (with its progress bar).
3. ``rerankd eval``: first-stage vs reranked nDCG@10 (MAP, recall) and their paired difference.
4. One job's record (``GET /v1/jobs/{id}``), found again through the run's ``Idempotency-Key``.
5. The stack is stopped (SIGTERM to ``rerankd up``, which stops its children), then every
   process the demo started is checked gone and killed if not, found by an environment tag
   (:mod:`rerankd.launchers.demo_stack`).  The same happens on Ctrl-C, SIGTERM or SIGHUP at any point;
   if the demo itself is killed, ``rerankd up`` gets SIGTERM from the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from rerankd.launchers.demo_stack import DemoStack, demo_env, interruptible, run_foreground, shield
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.proctree import MARKER

__all__ = ["DemoOptions", "command", "run_demo"]

EXAMPLES = Path("examples/noveleval")
FINAL = ("succeeded", "failed", "cancelled", "expired")


class DemoError(RuntimeError):
    """A step of the demo failed (the message says which and why)."""


@dataclass
class DemoOptions:
    """What the demo runs (the defaults are ``make demo``'s)."""

    model: str = DEFAULT_MODEL
    strategy: str = "icr"
    params: list[str] = field(default_factory=list)
    input: Path = EXAMPLES / "candidates.jsonl"
    first_stage: Path = EXAMPLES / "run.txt"
    qrels: Path = EXAMPLES / "qrels.txt"
    limit: int | None = None
    top_k: int | None = None
    out_dir: Path = Path("runs/demo")
    worker_concurrency: int | None = 2
    ready_timeout_s: float = 600.0
    stop_timeout_s: float = 120.0
    interrupted_stop_timeout_s: float = 15.0
    """After Ctrl-C, running jobs are not waited for longer than this (the stack's data is temporary)."""

    @property
    def output(self) -> Path:
        return self.out_dir / f"noveleval.{self.strategy}.trec"


def _say(message: str = "") -> None:
    typer.echo(message)


def _fmt_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z" if ts else "-"


def job_lines(job: dict[str, Any], top: int = 10) -> list[str]:
    """A job record as a few readable lines: status, attempts, timings, ranking with scores."""
    created, started, finished = job.get("created_at"), job.get("started_at"), job.get("finished_at")
    lines = [
        f"id        {job.get('id')}",
        f"status    {job.get('status')}   attempts {job.get('attempts')}   worker {job.get('worker')}",
        f"created   {_fmt_time(created)}   started {_fmt_time(started)}   finished {_fmt_time(finished)}",
    ]
    if created and started and finished:
        lines.append(f"timings   waited in the queue {started - created:.2f} s, ran {finished - started:.2f} s")
    result = job.get("result") or {}
    if result.get("timings"):
        lines.append("engine    " + ", ".join(f"{k} {v:.3f}" for k, v in result["timings"].items()))
    if job.get("error"):
        lines.append(f"error     {json.dumps(job['error'])}")
    ranking = result.get("ranking") or []
    if ranking:
        lines.append(f"ranking   (top {min(top, len(ranking))} of {len(ranking)}; strategy {result.get('strategy')})")
        lines.append("   rank  docid                 score")
        for doc in ranking[:top]:
            lines.append(f"   {doc['rank']:>4}  {doc['docid']:<20} {doc['score']:>7.4f}")
    for event in job.get("history") or []:
        stamp, _, what = str(event).partition(" ")
        with contextlib.suppress(ValueError):
            stamp = _fmt_time(float(stamp))
        lines.append(f"history   {stamp}  {what}")
    return lines


def find_job(url: str, opts: DemoOptions) -> tuple[dict[str, Any], bool]:
    """The first query's job of the run (same ``Idempotency-Key`` and body: the same job) and
    whether the service said so (``Idempotent-Replayed``)."""
    from rerankd.client import job_body
    from rerankd.formats.inputs import read_queries
    from rerankd.runs import journal_path, read_journal
    from rerankd.runs.queue_executor import QueueExecutor
    from rerankd.runs.requests import build_requests, strategy_config

    run_id = str(read_journal(journal_path(opts.output)).header["run_id"])
    first = next(iter(read_queries(opts.input)))
    request = build_requests([first], strategy_config(opts.strategy, opts.params), opts.top_k)[0]
    key = QueueExecutor(client=None, run_id=run_id, model=opts.model).idempotency_key(request, 0)  # type: ignore[arg-type]
    with httpx.Client(base_url=url, timeout=60.0) as http:
        resp = http.post("/v1/jobs", json=job_body(request, opts.model, None, None), headers={"Idempotency-Key": key})
        resp.raise_for_status()
        job = resp.json()
        deadline = time.monotonic() + 300
        while True:
            job = http.get(f"/v1/jobs/{job['id']}", params={"include": "history"}).raise_for_status().json()
            if job["status"] in FINAL or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    return job, resp.headers.get("Idempotent-Replayed") == "true"


def run_demo(opts: DemoOptions) -> int:
    """Run the demo; the exit code (130 when interrupted)."""
    for what, path in (("--input", opts.input), ("--first-stage", opts.first_stage), ("--qrels", opts.qrels)):
        if not path.exists():
            _say(f"error: {what} {path} not found (run from the repository root, or pass {what})")
            return 2
    token = os.environ.get(MARKER) or secrets.token_hex(8)
    env = demo_env(token, opts.model)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    phases: list[str] = []
    code = 0
    with interruptible(), tempfile.TemporaryDirectory(prefix="rerankd-demo-") as tmp:
        stack = DemoStack(env, Path(tmp) / "data", opts.out_dir / "stack.log", opts.worker_concurrency)
        stack.log_path.unlink(missing_ok=True)
        try:
            stack.start()
            _say(
                f"== starting the stack: `rerankd up --port {stack.port}` (Valkey, one worker with {opts.model}, "
                f"the API); private data dir, log {stack.log_path}"
            )
            t = time.monotonic()
            problem = stack.wait_ready(opts.ready_timeout_s)
            if problem is not None:
                raise DemoError(f"{problem}; the end of {stack.log_path}:\n{stack.log_tail()}")
            phases.append(f"stack up {time.monotonic() - t:.1f} s")
            _say(f"   ready in {time.monotonic() - t:.1f} s: API on {stack.url}")

            argv = [
                "rerank",
                str(opts.input),
                "-o",
                str(opts.output),
                "--strategy",
                opts.strategy,
                "--model",
                opts.model,
                "--queue",
                "--api-url",
                stack.url,
                "--restart",
            ]
            for p in opts.params:
                argv += ["-p", p]
            if opts.limit:
                argv += ["--limit", str(opts.limit)]
            if opts.top_k:
                argv += ["--top-k", str(opts.top_k)]
            _say(f"== the queries as jobs through the queue: rerankd {' '.join(argv)}")
            t = time.monotonic()
            if run_foreground(argv, env) != 0:
                raise DemoError(f"`rerankd rerank --queue` failed; the end of {stack.log_path}:\n{stack.log_tail()}")
            phases.append(f"rerank through the queue {time.monotonic() - t:.1f} s")

            _say(f"== nDCG@10: first stage (A = {opts.first_stage}) vs {opts.strategy} with {opts.model} (B)")
            if run_foreground(["eval", str(opts.first_stage), str(opts.output), "--qrels", str(opts.qrels)], env) != 0:
                raise DemoError("`rerankd eval` failed")

            job, replayed = find_job(stack.url, opts)
            how = (
                "the run's job of the first query, found again by its Idempotency-Key"
                if replayed
                else "a job for the first query (the run's key was not found)"
            )
            _say(f"== one job's record: GET /v1/jobs/{job['id']}?include=history ({how})")
            for line in job_lines(job):
                _say("   " + line)
        except KeyboardInterrupt as e:
            shield()
            _say(f"\n== interrupted ({str(e) or 'SIGINT'})")
            code = 130
        except DemoError as e:
            _say(f"error: {e}")
            code = 1
        except (httpx.HTTPError, OSError, ValueError, KeyError) as e:
            _say(f"error: {type(e).__name__}: {e}")
            code = 1
        finally:
            shield()
            t = time.monotonic()
            _say("== stopping the stack")
            note = stack.stop(token, opts.interrupted_stop_timeout_s if code == 130 else opts.stop_timeout_s)
            phases.append(f"stack stopped {time.monotonic() - t:.1f} s")
            _say(f"   stopped: {note}")
    _say(f"== demo {'interrupted' if code == 130 else 'done'} in {time.monotonic() - t0:.1f} s ({', '.join(phases)})")
    return code


def command(
    model: Annotated[str, typer.Option(help="Model the worker hosts (registry name or folder).")] = DEFAULT_MODEL,
    strategy: Annotated[str, typer.Option(help="sliding_window | full_ranking | first | icr")] = "icr",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy setting key=value.")] = None,
    input: Annotated[Path, typer.Option(help="Query file.")] = DemoOptions.input,
    first_stage: Annotated[Path, typer.Option(help="The first-stage TREC run.")] = DemoOptions.first_stage,
    qrels: Annotated[Path, typer.Option(help="TREC qrels.")] = DemoOptions.qrels,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N queries.")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Rerank only the first K candidates.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the run and the stack's log go.")] = DemoOptions.out_dir,
    worker_concurrency: Annotated[int, typer.Option(min=1, help="Jobs the worker runs at once.")] = 2,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack.")] = 600.0,
) -> None:
    """Start a private stack (`rerankd up`), rerank NovelEval as jobs through its queue, print
    nDCG@10 and one job's record, then stop the stack (also on Ctrl-C), leaving no process behind."""
    opts = DemoOptions(
        model=model,
        strategy=strategy,
        params=param or [],
        input=input,
        first_stage=first_stage,
        qrels=qrels,
        limit=limit,
        top_k=top_k,
        out_dir=out_dir,
        worker_concurrency=worker_concurrency,
        ready_timeout_s=ready_timeout,
    )
    raise typer.Exit(run_demo(opts))
