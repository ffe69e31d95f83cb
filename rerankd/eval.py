"""Evaluation of TREC runs with ir_measures."""

from __future__ import annotations

from pathlib import Path

import ir_measures
from ir_measures import AP, R, nDCG

DEFAULT_MEASURES = ("nDCG@10", "AP@100", "R@20", "R@100")


def evaluate(run: Path | str, qrels: Path | str, rel_level: int = 1) -> dict[str, float]:
    """Aggregate nDCG@10, MAP@100, Recall@20/100 of ``run`` against ``qrels``.

    ``rel_level`` is the minimum grade counted relevant by the binary measures
    (TREC DL uses 2).
    """
    measures = [nDCG @ 10, AP(rel=rel_level) @ 100, R(rel=rel_level) @ 20, R(rel=rel_level) @ 100]
    qrels_data = list(ir_measures.read_trec_qrels(str(qrels)))
    run_data = list(ir_measures.read_trec_run(str(run)))
    agg = ir_measures.calc_aggregate(measures, qrels_data, run_data)
    names = dict(zip(measures, DEFAULT_MEASURES, strict=True))
    return {names[m]: float(v) for m, v in agg.items()}
