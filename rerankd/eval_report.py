"""Presentation of :mod:`rerankd.eval` results: text tables, JSON, a per-query plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.eval import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    DEFAULT_MEASURES,
    Comparison,
    RunScores,
    common_queries,
)


def summary_table(runs: list[RunScores], comparisons: list[Comparison]) -> list[str]:
    """One line per measure: the mean of each run, then (two runs) delta, CI and W/T/L of B vs A."""
    if len(runs) == 1:
        return [f"{m}\t{runs[0].mean(m):.4f}" for m in DEFAULT_MEASURES]
    a, b = runs
    pct = round(CONFIDENCE * 100)
    lines = [
        f"A = {a.path} ({len(a.queries)} queries)",
        f"B = {b.path} ({len(b.queries)} queries)",
        f"paired over {comparisons[0].queries} common queries; delta = B - A; "
        f"{pct}% CI: percentile bootstrap, {BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}",
        f"{'measure':<10}{'A':>8}{'B':>8}{'delta':>9}  {f'{pct}% CI':<19}{'W/T/L':>10}",
    ]
    for c in comparisons:
        ci = f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        wtl = f"{c.wins}/{c.ties}/{c.losses}"
        lines.append(f"{c.measure:<10}{c.mean_a:>8.4f}{c.mean_b:>8.4f}{c.delta:>+9.4f}  {ci:<19}{wtl:>10}")
    return lines


def per_query_table(runs: list[RunScores], measure: str) -> list[str]:
    """Per-query rows: every measure for one run; ``measure`` of A, B and their delta for two."""
    if len(runs) == 1:
        r = runs[0]
        lines = ["qid\t" + "\t".join(DEFAULT_MEASURES)]
        for q in r.queries:
            lines.append(q + "\t" + "\t".join(f"{r.per_query[q][m]:.4f}" for m in DEFAULT_MEASURES))
        return lines
    a, b = runs
    lines = [f"qid\t{measure} A\t{measure} B\tdelta"]
    for q in common_queries(a, b):
        va, vb = a.per_query[q][measure], b.per_query[q][measure]
        lines.append(f"{q}\t{va:.4f}\t{vb:.4f}\t{vb - va:+.4f}")
    return lines


def as_json(runs: list[RunScores], comparisons: list[Comparison], all_qrels_queries: bool) -> dict[str, Any]:
    """Everything the tables show, machine-readable."""
    out: dict[str, Any] = {
        "measures": list(DEFAULT_MEASURES),
        "all_qrels_queries": all_qrels_queries,
        "runs": [
            {
                "path": r.path,
                "queries": len(r.queries),
                "run_queries": r.run_queries,
                "qrels_queries": r.qrels_queries,
                "missing_queries": r.missing,
                "mean": r.means(),
                "per_query": {q: r.per_query[q] for q in r.queries},
            }
            for r in runs
        ],
    }
    if comparisons:
        out["comparison"] = {
            "delta": "B - A",
            "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "confidence": CONFIDENCE},
            "measures": {c.measure: c.as_dict() for c in comparisons},
        }
    return out


def plot(runs: list[RunScores], measure: str, out: Path) -> None:
    """Bar chart of per-query ``measure``: deltas B - A (two runs) or values (one run), sorted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(runs) == 2:
        a, b = runs
        rows = [(q, b.per_query[q][measure] - a.per_query[q][measure]) for q in common_queries(a, b)]
        title = f"{measure} per query: B - A\nA = {Path(a.path).name}, B = {Path(b.path).name}"
        ylabel = f"delta {measure}"
    else:
        rows = [(q, runs[0].per_query[q][measure]) for q in runs[0].queries]
        title = f"{measure} per query: {Path(runs[0].path).name}"
        ylabel = measure
    rows.sort(key=lambda r: r[1], reverse=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(rows) + 2), 4.0))
    colors = ["#2a9d8f" if v > 0 else "#e76f51" if v < 0 else "#999999" for _, v in rows]
    ax.bar(range(len(rows)), [v for _, v in rows], color=colors)
    ax.set_xticks(range(len(rows)), [q for q, _ in rows], rotation=90, fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("query id")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
