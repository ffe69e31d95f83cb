"""``rerankd eval`` (TREC measures, paired comparison) and ``rerankd export`` (distillation data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rerankd.cli.common import fail
from rerankd.formats.inputs import InputFormatError

__all__ = ["eval_cmd", "export_cmd"]


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
        raise fail(f"run file not found: {run}")
    recorded = _recorded_inputs(run)
    if input is None:
        if not recorded.get("input"):
            raise fail(f"{run} does not say which query file it came from; pass --input QUERY_FILE")
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
        raise fail(str(e)) from None
    skipped = ", ".join(f"{v} ({k})" for k, v in stats.skipped.items())
    typer.echo(
        f"exported {n} {fmt} lines from {stats.queries} queries -> {output}"
        + (f"; skipped {skipped}" if skipped else ""),
        err=True,
    )


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
        raise fail(f"eval takes one run or two (A B), got {len(runs)}")
    if measure not in DEFAULT_MEASURES:
        raise fail(f"--measure must be one of {', '.join(DEFAULT_MEASURES)}, got {measure!r}")
    for p, what in [*((r, "run") for r in runs), (qrels, "qrels")]:
        if not p.exists():
            raise fail(f"{what} file not found: {p}")
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
            raise fail("--plot needs matplotlib: pip install 'rerankd[plot]'") from None
    if as_json:
        typer.echo(json.dumps(eval_report.as_json(scores, comparisons, all_qrels_queries), indent=2))
        return
    for line in eval_report.summary_table(scores, comparisons):
        typer.echo(line)
    if per_query:
        typer.echo("")
        for line in eval_report.per_query_table(scores, measure):
            typer.echo(line)
