"""``rerankd rerank`` (a local engine, or the jobs of a service with ``--queue``) and ``rerankd submit``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rerankd.cli.common import fail
from rerankd.client import DEFAULT_URL
from rerankd.formats.inputs import InputFormatError, read_queries
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.runs.requests import build_requests, strategy_config
from rerankd.types import RerankInputError, RerankRequest

__all__ = ["engine_options", "rerank", "submit"]

log = logging.getLogger("rerankd")


def engine_options(kind: str, device: str | None, dtype: str | None, pairs: list[str]) -> dict[str, Any]:
    """Engine settings from ``--device``, ``--dtype`` and ``-e key=value``, validated for ``kind``."""
    from rerankd.engines.devices import with_device
    from rerankd.engines.factory import ENGINE_KINDS
    from rerankd.engines.options import parse_option_pairs, validate_engine_options

    flags = {"device": "--device", "dtype": "--dtype"}
    options = with_device(parse_option_pairs(pairs), device, dtype, flags=flags, options_flag="-e")
    if kind.strip().lower() not in ENGINE_KINDS:
        return options
    return validate_engine_options(kind.strip().lower(), options)


def rerank(
    input: Annotated[Path, typer.Argument(help="Query file: JSONL (ours or rank_llm) or a TREC run.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the reranked run.")],
    strategy: Annotated[
        str, typer.Option(help="sliding_window | full_ranking | first | icr | pointwise | cascade")
    ] = "sliding_window",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Strategy setting key=value (repeatable), e.g. -p window_size=20."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Registry name, local folder or HF id (default smollm2-135m-instruct); "
            "with --queue the service's model name (default: the service's default)."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="Engine kind: hf | vllm | openai | cross_encoder (docs/engines.md), default hf; not with --queue."
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="hf engine device: auto (CUDA when present) | cpu | cuda | cuda:N; default auto."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="Weights dtype: auto | float32 | bfloat16 | float16; default auto.")
    ] = None,
    engine_option: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-option",
            "-e",
            help="Engine setting key=value (repeatable), e.g. -e max_batch_size=16 (docs/engines.md).",
        ),
    ] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Rerank only the first K candidates.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Take only the first N queries.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="trec | jsonl")] = "trec",
    topics: Annotated[Path | None, typer.Option(help="TREC input: qid<TAB>query file.")] = None,
    collection: Annotated[Path | None, typer.Option(help="TREC input: docid<TAB>text file.")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Queries reranked at once (default 1; with --queue: 16 jobs in flight).")
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Run the queries as jobs of a rerankd service (spread over every worker of the model's queue).",
        ),
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            envvar="RERANKD_API_URL", help="With --queue: the service's base URL (default http://127.0.0.1:8080)."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RERANKD_API_KEY", help="With --queue: API key (Bearer).", show_default=False)
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard the journal of an earlier run of OUTPUT; start over.")
    ] = False,
    keep_journal: Annotated[
        bool,
        typer.Option(
            "--keep-journal/--no-keep-journal",
            help="Keep OUTPUT.journal.jsonl (the results as JSONL, read by `rerankd export`) after success.",
        ),
    ] = True,
) -> None:
    """Rerank every query of INPUT and write a TREC run (or result JSONL).

    Resumable: finished queries are journaled to OUTPUT.journal.jsonl as they finish; run the
    same command again after a crash and only the unfinished queries are reranked.  With
    --queue, jobs already submitted by the interrupted run are picked up, not run again.
    """
    if fmt not in ("trec", "jsonl"):
        raise fail(f"--format must be trec or jsonl, got {fmt!r}")
    if queue and engine is not None:
        raise fail("--engine does not apply with --queue: the workers of the model's queue host the engine")
    if queue and (device or dtype or engine_option):
        raise fail("--device, --dtype and -e do not apply with --queue: the workers' settings choose them")
    try:
        engine_settings = engine_options(engine or "hf", device, dtype, engine_option or [])
    except ValueError as e:
        raise fail(str(e)) from None
    for flag, value, env in (("--api-url", api_url, "RERANKD_API_URL"), ("--api-key", api_key, "RERANKD_API_KEY")):
        if not queue and value is not None and env not in os.environ:
            raise fail(f"{flag} only applies with --queue")
    try:
        cfg = strategy_config(strategy, param or [])
        items = []
        for it in read_queries(input, topics=topics, collection=collection):
            items.append(it)
            if limit and len(items) >= limit:
                break
        requests = build_requests(items, cfg, top_k)
    except InputFormatError as e:
        raise fail(str(e)) from None
    except (ValueError, ValidationError) as e:
        raise fail(str(e)) from None

    from rerankd.runs import JournalError, ResumableRun, engine_executor, file_sha256

    settings = {
        "input_sha256": [file_sha256(p) if p else None for p in (input, topics, collection)],
        "strategy": cfg.model_dump(mode="json"),
        "model": model if queue else model or DEFAULT_MODEL,
        "engine": "queue" if queue else engine or "hf",
        "top_k": top_k,
        "limit": limit,
    }
    inputs = {
        k: str(p.resolve()) if p else None
        for k, p in (("input", input), ("topics", topics), ("collection", collection))
    }
    batch = ResumableRun(
        requests, output, fmt, settings=settings, inputs=inputs, restart=restart, keep_journal=keep_journal
    )
    try:
        pending = batch.open()
        if pending and queue:
            _run_on_queue(batch, api_url or DEFAULT_URL, api_key, model, concurrency or 16)
        elif pending:
            from rerankd.engines.factory import load_engine

            eng = load_engine(engine or "hf", model or DEFAULT_MODEL, **engine_settings)

            async def run() -> None:
                try:
                    await batch.run(engine_executor(eng, concurrency or 1))
                finally:
                    await eng.aclose()

            try:
                asyncio.run(run())
            except RerankInputError as e:
                raise fail(f"{e} ({len(batch.results)} queries journaled; rerunning resumes)") from None
            except KeyboardInterrupt:
                raise fail(
                    f"interrupted after {len(batch.results)} of {len(requests)} queries; "
                    "run the same command again to resume",
                    130,
                ) from None
        else:
            log.info("all %d queries already done in %s", len(requests), batch.journal)
        summary = batch.finish()
    except JournalError as e:
        raise fail(str(e)) from None
    finally:
        batch.close()
    rate = summary.elapsed_s / max(1, summary.ran)
    typer.echo(
        f"reranked {summary.ran} queries ({summary.resumed} resumed from the journal, {summary.total} total) "
        f"in {summary.elapsed_s:.1f}s ({rate:.2f}s/query) -> {output}",
        err=True,
    )
    typer.echo(
        f"journal {'kept' if summary.journal_kept else 'removed'}: {summary.journal}"
        + (" (result JSONL for `rerankd export`)" if summary.journal_kept else ""),
        err=True,
    )


def _run_on_queue(batch: Any, api_url: str, api_key: str | None, model: str | None, in_flight: int) -> None:
    """Run ``batch``'s pending queries as service jobs; report how they spread over workers."""
    from rerankd.client import AsyncClient, RerankdError
    from rerankd.runs.queue_executor import QueueExecutor, QueueJobError

    async def run() -> QueueExecutor:
        async with AsyncClient(api_url, api_key=api_key) as client:
            executor = QueueExecutor(client, run_id=batch.run_id, model=model, in_flight=in_flight)
            await batch.run(executor)
            return executor

    done = len(batch.results)
    try:
        executor = asyncio.run(run())
    except (QueueJobError, RerankdError) as e:
        raise fail(f"{e} ({len(batch.results)} queries journaled; rerunning resumes)") from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted after {len(batch.results)} of {len(batch.requests)} queries; submitted jobs keep "
            "running on the service; run the same command again to collect them and resume",
            130,
        ) from None
    spread = ", ".join(f"{w}: {n}" for w, n in sorted(executor.workers.items()))
    typer.echo(
        f"{len(batch.results) - done} jobs on {len(executor.workers)} workers ({spread}); "
        f"{executor.replayed} picked up from an earlier run",
        err=True,
    )


def submit(
    input: Annotated[Path, typer.Argument(help="Query file (our JSONL or rank_llm JSONL).")],
    url: Annotated[str, typer.Option(envvar="RERANKD_URL", help="API base URL.")] = "http://127.0.0.1:8080",
    api_key: Annotated[str | None, typer.Option(envvar="RERANKD_API_KEY", help="API key.")] = None,
    model: Annotated[str | None, typer.Option(help="Model or alias (default: the server's).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Strategy (default: the model alias's).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Strategy setting key=value (repeatable).")
    ] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Rerank only the first K candidates.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write results here (default stdout).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs in flight at once.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each job.")] = 3600.0,
) -> None:
    """Submit every query of INPUT as a job, wait for all, print results as JSONL in input order."""
    import sys

    from tqdm import tqdm

    from rerankd.client import AsyncClient, RerankdError

    logging.getLogger("httpx").setLevel(logging.WARNING)

    try:
        cfg = strategy_config(strategy, param or []) if strategy else None
        items = list(read_queries(input))
    except InputFormatError as e:
        raise fail(str(e)) from None
    except (ValueError, ValidationError) as e:
        raise fail(str(e)) from None
    requests = []
    for it in items:
        cands = it.candidates[:top_k] if top_k else it.candidates
        requests.append(
            RerankRequest(query=it.query, candidates=cands, strategy=cfg)
            if cfg is not None
            else RerankRequest(query=it.query, candidates=cands)
        )

    async def run() -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(concurrency)
        async with AsyncClient(url, api_key=api_key) as client:
            with tqdm(total=len(requests), unit="query", desc="submit", file=sys.stderr) as bar:

                async def one(req: RerankRequest) -> dict[str, Any]:
                    async with sem:
                        try:
                            job = await client.submit_job(req, model=model)
                            job = await client.wait(job["id"], timeout=timeout)
                        except (RerankdError, TimeoutError) as e:
                            job = {"status": "failed", "error": {"message": str(e)}}
                    bar.update(1)
                    return job

                return list(await asyncio.gather(*(one(r) for r in requests)))

    jobs = asyncio.run(run())
    failed = 0
    fh = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        for req, job in zip(requests, jobs, strict=True):
            if job.get("status") == "succeeded":
                fh.write(json.dumps(job["result"]) + "\n")
            else:
                failed += 1
                err = job.get("error") or {}
                fh.write(json.dumps({"qid": req.query.qid, "status": job.get("status"), "error": err}) + "\n")
    finally:
        if output:
            fh.close()
    typer.echo(f"{len(jobs) - failed} of {len(jobs)} queries reranked", err=True)
    if failed:
        raise typer.Exit(1)
