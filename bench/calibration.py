"""Calibrated relevance vs the rank-derived map: fit on DL21 + NovelEval, evaluate on DL19 top-20.

Per case (model x strategy) the bench

1. writes capped inputs (top-20 candidates, at most ``--max-words`` words per passage) into the
   cache folder, once;
2. reranks DL21, NovelEval and DL19 with ``rerankd rerank`` in-process (hf engine), one
   subprocess per dataset; the run journals stay in the cache, so a re-run only refits;
3. fits a calibration with ``rerankd calibrate``'s code on the DL21 + NovelEval journals
   (never DL19), then evaluates on DL19 top-20: ECE, Brier score and log loss of the calibrated
   probability next to the rank-derived map ``1 - (rank - 1) / n``; and at a threshold of 0.5 the
   precision and recall of the kept passages next to a top-k cut that keeps as many passages
   on average (k = the mean kept count, rounded; the fraction k - floor(k) is honoured by
   alternating floor/ceil over queries so the averages match).

Relevant = grade >= 2 on both DL sets and on NovelEval (grades 0-2: 2 = relevant).

    python bench/calibration.py                               # every case (slow on 2 cores)
    python bench/calibration.py --cases smollm2-icr --limit 5  # a smoke run
    python bench/calibration.py --journals-only --cases qwen-icr
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BENCH_DATA", REPO.parent / "shared" / "data"))

DATASETS = {
    # name: (candidates file, qrels file)
    "dl21": ("trec-dl-2021-passage-bm25top100/candidates.jsonl", "trec-dl-2021-passage-bm25top100/qrels.txt"),
    "noveleval": ("noveleval-2306/candidates.jsonl", "noveleval-2306/qrels.txt"),
    "dl19": ("trec-dl-2019-passage-bm25top100/candidates.jsonl", "trec-dl-2019-passage-bm25top100/qrels.txt"),
}
FIT_SETS = ("dl21", "noveleval")
EVAL_SET = "dl19"
TOP_K = 20
GRADE = 2


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    strategy: str
    params: tuple[str, ...] = field(default_factory=tuple)


CASES = {
    "smollm2-icr": Case("smollm2-icr", "smollm2-135m-instruct", "icr"),
    "qwen-icr": Case("qwen-icr", "qwen2.5-coder-0.5b-instruct", "icr"),
    "qwen-first": Case("qwen-first", "qwen2.5-coder-0.5b-instruct", "first"),
}


def capped_input(cache: Path, dataset: str, max_words: int, limit: int | None) -> Path:
    """Top-20 candidates with passages cut to ``max_words`` words (written once)."""
    tag = f"top{TOP_K}.w{max_words}" + (f".n{limit}" if limit else "")
    out = cache / "inputs" / f"{dataset}.{tag}.jsonl"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = DATA / DATASETS[dataset][0]
    lines = []
    with src.open(encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            for c in obj["candidates"]:
                c["text"] = " ".join(c["text"].split()[:max_words])
            obj["candidates"] = obj["candidates"][:TOP_K]
            lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
            if limit and len(lines) >= limit:
                break
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(out)
    return out


def run_journal(cache: Path, case: Case, dataset: str, max_words: int, limit: int | None, run: bool = True) -> Path:
    """Rerank one dataset with ``rerankd rerank`` (resumable); the journal path.  ``run=False``:
    the journal as it stands (an unfinished run's journal holds the queries done so far)."""
    inp = capped_input(cache, dataset, max_words, limit)
    out = cache / case.name / f"{inp.stem}.trec"
    journal = out.with_name(out.name + ".journal.jsonl")
    if (out.exists() and journal.exists()) or not run:
        return journal
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rerankd", "rerank", str(inp), "-o", str(out), "--strategy", case.strategy]
    cmd += ["--model", case.model, "--device", "cpu"]
    for p in case.params:
        cmd += ["-p", p]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    t0 = time.perf_counter()
    print(f"[{case.name}] reranking {dataset} ({inp.name}) ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    print(f"[{case.name}] {dataset} done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return journal


def _topk_equal_size(rows: list[tuple[np.ndarray, np.ndarray]], mean_kept: float) -> tuple[float, float]:
    """Precision and recall of top-k cuts whose average size is ``mean_kept``."""
    lo = math.floor(mean_kept)
    frac = mean_kept - lo
    kept = rel_kept = rel_total = 0
    acc = 0.0
    for labels, _ in rows:  # labels in rank order
        acc += frac
        k = lo + (1 if acc >= 1.0 - 1e-9 else 0)
        if k > lo:
            acc -= 1.0
        kept += min(k, labels.size)
        rel_kept += int(labels[:k].sum())
        rel_total += int(labels.sum())
    return (rel_kept / kept if kept else float("nan")), (rel_kept / rel_total if rel_total else float("nan"))


def _counts(journals: list[tuple[Path, Path]]) -> str:
    from rerankd.runs import read_journal

    return ", ".join(f"{j.name.split('.')[0]} {len(read_journal(j).results)}" for j, _ in journals)


def evaluate_case(
    cache: Path,
    case: Case,
    fit_sets: list[str],
    fit_journals: list[Path],
    eval_journal: Path,
    plot: bool,
    thresholds: list[float],
) -> list[str]:
    """Fit on the fit journals, evaluate on DL19; the printed lines."""
    from rerankd.calibration import rank_score
    from rerankd.calibration.data import load_samples
    from rerankd.calibration.fit import fit_calibration
    from rerankd.calibration.metrics import brier, ece, log_loss

    qrels = [DATA / DATASETS[d][1] for d in fit_sets]
    present = [(j, q) for j, q in zip(fit_journals, qrels, strict=True) if j.exists()]
    cal, report = fit_calibration([j for j, _ in present], [q for _, q in present], grade=GRADE)
    out_file = cache / case.name / f"calibration.{'+'.join(fit_sets)}.json"
    cal.save(out_file)
    test = load_samples([eval_journal], [DATA / DATASETS[EVAL_SET][1]], grade=GRADE)
    if test.settings != cal.settings or test.model != cal.model:
        raise SystemExit(f"{case.name}: DL19 journal was run with other settings than the fit journals")
    y = np.concatenate([q.labels for q in test.queries])
    p_cal = np.concatenate([cal.predict_query(q.scores) for q in test.queries])
    p_rank = np.concatenate([np.array([rank_score(r, q.n) for r in range(1, q.n + 1)]) for q in test.queries])
    lines = [
        f"{case.name}: {cal.model} {cal.strategy} {json.dumps(cal.settings, sort_keys=True)}",
        f"  fit: {report.queries} judged queries ({_counts(present)}), {report.passages} passages, "
        f"{report.positives} relevant; chosen map {cal.method} on {', '.join(cal.features)}; "
        f"held-out split ({report.heldout_queries} queries) ECE {report.heldout['ece']:.4f} "
        f"Brier {report.heldout['brier']:.4f}",
        f"  DL19 top-{TOP_K}: {len(test.queries)} queries, {y.size} passages, {int(y.sum())} relevant "
        f"(base rate {y.mean():.3f})",
        f"  {'':<12}{'ECE':>8}{'Brier':>8}{'logloss':>9}",
    ]
    for name, p in (("calibrated", p_cal), ("rank map", p_rank)):
        lines.append(f"  {name:<12}{ece(p, y):8.4f}{brier(p, y):8.4f}{log_loss(p, y):9.4f}")
    b_cal, b_rank = brier(p_cal, y), brier(p_rank, y)
    lines.append(f"  Brier reduction vs rank map: {100 * (1 - b_cal / b_rank):.1f}%")
    rel_total = int(y.sum())
    lines.append(f"  calibrated P on DL19: min {p_cal.min():.3f}, median {np.median(p_cal):.3f}, max {p_cal.max():.3f}")
    for t in thresholds:
        kept = rel_kept = 0
        rows = []
        for q in test.queries:
            p = cal.predict_query(q.scores)
            keep = p >= t
            kept += int(keep.sum())
            rel_kept += int(q.labels[keep].sum())
            rows.append((q.labels, p))
        mean_kept = kept / len(test.queries)
        prec = rel_kept / kept if kept else float("nan")
        rec = rel_kept / rel_total if rel_total else float("nan")
        tk_prec, tk_rec = _topk_equal_size(rows, mean_kept)
        lines.append(
            f"  threshold {t:g}: keeps {mean_kept:.2f}/query, precision {prec:.3f} recall {rec:.3f}; "
            f"top-k of the same mean size (k={mean_kept:.2f}): precision {tk_prec:.3f} recall {tk_rec:.3f}"
        )
    if plot:
        from rerankd.calibration.plot import reliability_plot

        png = cache / case.name / f"reliability-dl19.{'+'.join(fit_sets)}.png"
        reliability_plot({"calibrated": (p_cal, y), "rank map": (p_rank, y)}, png, title=f"{case.name} on DL19")
        lines.append(f"  reliability diagram: {png}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench-calibration")
    ap.add_argument("--max-words", type=int, default=100, help="words kept per passage (CPU budget)")
    ap.add_argument("--limit", type=int, default=None, help="queries per dataset (smoke runs)")
    ap.add_argument("--journals-only", action="store_true", help="rerank, do not fit")
    ap.add_argument("--plot", action="store_true", help="draw each case's DL19 reliability diagram")
    ap.add_argument("--no-run", action="store_true", help="fit on the journals as they stand (unfinished runs too)")
    ap.add_argument("--fit-sets", default=",".join(FIT_SETS), help="comma-separated, of: dl21, noveleval")
    ap.add_argument("--thresholds", default="0.5", help="comma-separated probability thresholds")
    args = ap.parse_args()
    out: list[str] = []
    for name in args.cases.split(","):
        case = CASES[name.strip()]
        # the evaluation set first: a run cut short still has all of it, and part of the fitting sets
        test = run_journal(args.cache, case, EVAL_SET, args.max_words, args.limit, not args.no_run)
        fit_sets = [d.strip() for d in args.fit_sets.split(",") if d.strip()]
        if EVAL_SET in fit_sets:
            raise SystemExit(f"{EVAL_SET} is the evaluation set: never fit on it")
        fit = [run_journal(args.cache, case, d, args.max_words, args.limit, not args.no_run) for d in fit_sets]
        if not args.journals_only:
            thresholds = [float(t) for t in args.thresholds.split(",")]
            lines = evaluate_case(args.cache, case, fit_sets, fit, test, args.plot, thresholds)
            print("\n".join(lines), flush=True)
            out += lines
    if out:
        print(f"\n(passages cut to {args.max_words} words; top-{TOP_K}; relevant = grade >= {GRADE})")


if __name__ == "__main__":
    main()
