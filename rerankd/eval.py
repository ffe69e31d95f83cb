"""Evaluation of TREC runs with ir_measures: per-query scores, coverage, paired comparison.

Which queries are averaged follows ``trec_eval``: by default only the queries that are in
both the run and the qrels (``trec_eval`` without ``-c``); with ``all_qrels_queries`` every
query of the qrels, a query the run lacks scoring 0 (``trec_eval -c``). Queries of the run
that have no judgements are never scored.

Two runs are compared on the queries both of them cover: per query ``delta = B - A``, a
percentile bootstrap over queries gives the confidence interval of the mean delta (fixed
seed, so the same files always print the same interval), and a query is a win for B when
``delta > 0``, a loss when ``delta < 0``, a tie otherwise (exact equality: both runs are
scored by the same code on the same qrels).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
from ir_measures import AP, R, nDCG

DEFAULT_MEASURES = ("nDCG@10", "AP@100", "R@20", "R@100")
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def _measures(rel_level: int) -> list[Any]:
    return [nDCG @ 10, AP(rel=rel_level) @ 100, R(rel=rel_level) @ 20, R(rel=rel_level) @ 100]


@dataclass
class RunScores:
    """Per-query scores of one run; ``queries`` are the ones averaged, in qrels order."""

    path: str
    queries: list[str]
    per_query: dict[str, dict[str, float]]  # qid -> measure -> value
    run_queries: int  # distinct query ids in the run file
    qrels_queries: int  # distinct query ids in the qrels
    missing: list[str] = field(default_factory=list)  # judged queries the run lacks

    def mean(self, measure: str) -> float:
        if not self.queries:
            return 0.0
        return float(np.mean([self.per_query[q][measure] for q in self.queries]))

    def means(self) -> dict[str, float]:
        return {m: self.mean(m) for m in DEFAULT_MEASURES}


@dataclass
class Comparison:
    """Paired difference B - A of one measure over the queries both runs cover."""

    measure: str
    queries: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_run(run: Path | str, qrels: Path | str, rel_level: int = 1, all_qrels_queries: bool = False) -> RunScores:
    """Score every judged query of ``run`` (see the module docstring for which queries count)."""
    qrels_data = list(ir_measures.read_trec_qrels(str(qrels)))
    run_data = list(ir_measures.read_trec_run(str(run)))
    judged = list(dict.fromkeys(q.query_id for q in qrels_data))
    in_run = set(r.query_id for r in run_data)
    measures = _measures(rel_level)
    names = dict(zip(measures, DEFAULT_MEASURES, strict=True))
    per_query: dict[str, dict[str, float]] = defaultdict(dict)
    for metric in ir_measures.iter_calc(measures, qrels_data, run_data):
        per_query[metric.query_id][names[metric.measure]] = float(metric.value)
    for qid in judged:  # a judged query the run lacks scores 0 (as trec_eval -c)
        for name in DEFAULT_MEASURES:
            per_query[qid].setdefault(name, 0.0)
    missing = [q for q in judged if q not in in_run]
    queries = judged if all_qrels_queries else [q for q in judged if q in in_run]
    return RunScores(
        path=str(run),
        queries=queries,
        per_query=dict(per_query),
        run_queries=len(in_run),
        qrels_queries=len(judged),
        missing=missing,
    )


def evaluate(
    run: Path | str, qrels: Path | str, rel_level: int = 1, all_qrels_queries: bool = False
) -> dict[str, float]:
    """Mean nDCG@10, MAP@100, Recall@20/100 of ``run`` against ``qrels``.

    ``rel_level`` is the minimum grade counted relevant by the binary measures (TREC DL uses 2).
    """
    return score_run(run, qrels, rel_level, all_qrels_queries).means()


def common_queries(a: RunScores, b: RunScores) -> list[str]:
    """The queries both runs have scores for (order of ``a``)."""
    in_b = set(b.queries)
    return [q for q in a.queries if q in in_b]


def bootstrap_ci(
    deltas: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``deltas`` (queries resampled with replacement)."""
    if deltas.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, deltas.size, size=(samples, deltas.size))
    means = deltas[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def compare(
    a: RunScores, b: RunScores, measure: str, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> Comparison:
    """Paired comparison of ``b`` against ``a`` on ``measure``."""
    queries = common_queries(a, b)
    va = np.array([a.per_query[q][measure] for q in queries], dtype=float)
    vb = np.array([b.per_query[q][measure] for q in queries], dtype=float)
    deltas = vb - va
    low, high = bootstrap_ci(deltas, samples=samples, seed=seed)
    return Comparison(
        measure=measure,
        queries=len(queries),
        mean_a=float(va.mean()) if queries else 0.0,
        mean_b=float(vb.mean()) if queries else 0.0,
        delta=float(deltas.mean()) if queries else 0.0,
        ci_low=low,
        ci_high=high,
        wins=int((deltas > 0).sum()),
        ties=int((deltas == 0).sum()),
        losses=int((deltas < 0).sum()),
    )


def coverage_warning(scores: RunScores, all_qrels_queries: bool) -> str | None:
    """A sentence for stderr when the run covers fewer queries than the qrels, else None."""
    if not scores.missing:
        return None
    covered = scores.qrels_queries - len(scores.missing)
    head = f"{scores.path} covers {covered} of the {scores.qrels_queries} judged queries"
    if all_qrels_queries:
        return f"{head}; averaging over all {scores.qrels_queries} (missing ones score 0, as trec_eval -c)"
    return (
        f"{head}; scoring only those {covered} (as trec_eval without -c); "
        "pass --all-qrels-queries to count the missing ones as 0"
    )
