"""``rerankd calibrate``: fit a score -> P(relevant) map on run journals with qrels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["command"]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _row(name: str, m: dict[str, float]) -> str:
    return f"  {name:<12}{m['ece']:>8.4f}{m['brier']:>8.4f}{m['log_loss']:>9.4f}"


def command(
    journals: Annotated[
        list[Path],
        typer.Argument(
            help="Run journals (OUTPUT.journal.jsonl of `rerankd rerank`) of one model, strategy, settings."
        ),
    ],
    qrels: Annotated[
        list[Path],
        typer.Option("--qrels", help="TREC qrels: one for all journals, or one per journal in the same order."),
    ],
    grade: Annotated[int, typer.Option(help="Graded qrels: the lowest grade counted relevant (TREC DL: 2).")] = 1,
    method: Annotated[
        str | None, typer.Option(help="isotonic | platt (default: chosen by cross-validated log loss).")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="Comma-separated: score, zscore (score standardised in the query), rank (rank/n map)."),
    ] = None,
    heldout: Annotated[float, typer.Option(help="Fraction of queries held out for the reported figures.")] = 0.2,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds (by query) to choose the map.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the query split.")] = 0,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Calibration file (default: beside the model in the rerankd cache)."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write the held-out reliability diagram (PNG) here; needs matplotlib.")
    ] = None,
) -> None:
    """Fit a monotone map from a strategy's scores to P(relevant) and write a calibration file.

    Workers load it at start-up (RERANKD_CALIBRATIONS, default: the model's folder in the cache)
    and answer Cohere's relevance_score / TEI's score with the probability.  The map never
    reorders a ranking.  Figures are for held-out queries, next to the rank map 1 - (rank-1)/n.
    """
    from rerankd.calibration.fit import fit_calibration
    from rerankd.calibration.model import CalibrationError
    from rerankd.calibration.store import default_path

    feats = [f.strip() for f in features.split(",") if f.strip()] if features else None
    try:
        cal, report = fit_calibration(
            journals, qrels, grade=grade, method=method, features=feats, heldout=heldout, folds=folds, seed=seed
        )
    except CalibrationError as e:
        raise _fail(str(e)) from None
    typer.echo(
        f"{cal.model} {cal.strategy} (settings {cal.settings_key}): {report.queries} judged queries, "
        f"{report.passages} passages, {report.positives} relevant (grade >= {grade}), {report.unjudged} unjudged "
        "(counted not relevant)"
    )
    typer.echo("candidates (cross-validated log loss on the fitting queries):")
    for c in sorted(report.cv, key=lambda c: c["cv_log_loss"]):
        note = "" if c["uses_score"] else "  (position only: same numbers for every query; left out)"
        typer.echo(f"  {c['method']:<9}{'+'.join(c['features']):<22}{c['cv_log_loss']:.4f}{note}")
    typer.echo(f"chosen: {cal.method} on {'+'.join(cal.features)}")
    if report.heldout:
        typer.echo(f"held-out queries: {report.heldout_queries}")
        typer.echo(f"  {'':<12}{'ECE':>8}{'Brier':>8}{'logloss':>9}")
        typer.echo(_row("calibrated", report.heldout))
        typer.echo(_row("rank map", report.heldout_rank_map))
    if plot is not None:
        if not report.heldout_data:
            raise _fail("--plot needs held-out queries (--heldout > 0)")
        from rerankd.calibration.plot import reliability_plot

        d = report.heldout_data
        reliability_plot(
            {"calibrated": (d["calibrated"], d["labels"]), "rank map": (d["rank_map"], d["labels"])},
            plot,
            title=f"{cal.model} {cal.strategy}: held-out queries",
        )
        typer.echo(f"reliability diagram: {plot}")
    path = cal.save(output or default_path(cal))
    typer.echo(f"calibration {cal.id} -> {path}")
