"""Student vs teacher vs first stage on held-out (or any) queries.

For each system (first stage, teacher, student) a TREC run is written to the eval folder; with
qrels, ``rerankd eval``'s code scores them (nDCG@10 and the other default measures) and compares
them pairwise with bootstrap confidence intervals.  Agreement with the teacher, per query, over
the documents the teacher ranked: nDCG@10 of the student's order with the teacher's ranking as
graded labels (grade ``max(0, 11 - teacher rank)``: the teacher's first ten, 10 down to 1) and
Kendall's tau between the two orders.  Speed: the student's ms/query is measured here, one query
at a time, in process; the teacher's is read from its journal (``rerank_s`` of each result, as
measured when the teacher ran on this machine).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.eval import compare, score_run
from rerankd.formats.inputs import QueryItem
from rerankd.formats.trec import trec_lines
from rerankd.types import PointwiseConfig, RankedDoc, RerankRequest, RerankResult

__all__ = ["EvalReport", "agreement", "evaluate", "first_stage_result", "kendall_tau", "report_lines"]

AGREEMENT_DEPTH = 10


@dataclass
class EvalReport:
    queries: int
    systems: dict[str, dict[str, float]] = field(default_factory=dict)
    """system -> measure -> mean (nDCG@10 vs qrels, agreement, tau, ms/query)."""
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "systems": self.systems, "comparisons": self.comparisons, "runs": self.runs}


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall's tau-a between two orders of the same items (1 = same order, -1 = reversed)."""
    pos = {d: i for i, d in enumerate(b)}
    items = [d for d in a if d in pos]
    n = len(items)
    if n < 2:
        return 1.0
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            score += 1 if pos[items[i]] < pos[items[j]] else -1
    return score / (n * (n - 1) / 2)


def _ndcg_at(order: Sequence[str], grades: dict[str, float], k: int = 10) -> float:
    dcg = sum(grades.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(order[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def agreement(student: RerankResult, teacher: RerankResult) -> tuple[float, float]:
    """``(nDCG@10 against the teacher's top ten as graded labels, Kendall tau)`` over the teacher's documents."""
    ranked = {d.docid for d in teacher.ranking}
    order = [d.docid for d in student.ranking if d.docid in ranked]
    grades = {d.docid: float(max(0, AGREEMENT_DEPTH + 1 - d.rank)) for d in teacher.ranking}
    return _ndcg_at(order, grades), kendall_tau(order, [d.docid for d in teacher.ranking])


def first_stage_result(item: QueryItem) -> RerankResult:
    """The first stage's order as a result (score = minus the rank)."""
    n = len(item.candidates)
    ranking = [
        RankedDoc(docid=c.docid, rank=i + 1, score=float(n - i), first_stage_rank=i + 1)
        for i, c in enumerate(item.candidates)
    ]
    return RerankResult(qid=item.query.qid, ranking=ranking, strategy="first_stage", model="first_stage")


async def _student_results(engine: Any, items: Sequence[QueryItem]) -> tuple[list[RerankResult], float]:
    from rerankd.strategies import rerank

    out = []
    total = 0.0
    for it in items:
        req = RerankRequest(query=it.query, candidates=it.candidates, strategy=PointwiseConfig())
        t0 = time.perf_counter()
        out.append(await rerank(req, engine))
        total += time.perf_counter() - t0
    return out, total / max(1, len(items))


def _write(path: Path, results: Sequence[RerankResult], tag: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in results:
            fh.writelines(trec_lines(r, tag))


def evaluate(
    engine: Any,
    items: Sequence[QueryItem],
    teacher: dict[str, RerankResult],
    out_dir: Path,
    qrels: Path | None = None,
    extra: dict[str, dict[str, RerankResult]] | None = None,
) -> EvalReport:
    """Evaluate the student ``engine`` (a cross-encoder engine) on ``items`` against the teacher's
    results ``teacher`` (by qid) and the first stage; runs and figures go to ``out_dir``.
    ``extra`` adds other systems' results (by name, then qid) to the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    student, student_s = asyncio.run(_student_results(engine, items))
    systems: dict[str, list[RerankResult]] = {
        "first_stage": [first_stage_result(it) for it in items],
        "student": student,
    }
    with_teacher = [it.query.qid for it in items if it.query.qid in teacher]
    if with_teacher:
        systems["teacher"] = [teacher[q] for q in with_teacher if q is not None]
    for name, by_qid in (extra or {}).items():
        systems[name] = [by_qid[it.query.qid] for it in items if it.query.qid in by_qid]
    report = EvalReport(queries=len(items))
    for name, results in systems.items():
        path = out_dir / f"{name}.trec"
        _write(path, results, name)
        report.runs[name] = str(path)
        report.systems[name] = {"queries": float(len(results))}
    report.systems["student"]["ms_per_query"] = student_s * 1000
    if "teacher" in systems:
        times = [r.timings.get("rerank_s") for r in systems["teacher"]]
        known = [t for t in times if t is not None]
        if known:
            report.systems["teacher"]["ms_per_query"] = 1000 * sum(known) / len(known)
        for name, results in systems.items():
            if name == "teacher":
                continue
            pairs = [agreement(r, teacher[r.qid]) for r in results if r.qid in teacher]
            if pairs:
                report.systems[name]["agree_ndcg10"] = sum(p[0] for p in pairs) / len(pairs)
                report.systems[name]["kendall_tau"] = sum(p[1] for p in pairs) / len(pairs)
    if qrels is not None:
        scores = {name: score_run(report.runs[name], qrels) for name in systems}
        for name, s in scores.items():
            vals = [s.per_query[q]["nDCG@10"] for q in s.queries]
            report.systems[name]["ndcg10"] = sum(vals) / len(vals) if vals else float("nan")
            report.systems[name]["judged_queries"] = float(len(vals))
        for a, b in (("first_stage", "student"), ("teacher", "student"), ("first_stage", "teacher")):
            if a in scores and b in scores:
                c = compare(scores[a], scores[b], "nDCG@10")
                report.comparisons.append({"a": a, "b": b, **c.__dict__})
    return report


def report_lines(report: EvalReport) -> list[str]:
    """The report as printable lines (a table, then the paired comparisons)."""
    cols = ("queries", "ndcg10", "agree_ndcg10", "kendall_tau", "ms_per_query")
    lines = [f"{'system':<14}" + "".join(f"{c:>14}" for c in cols)]
    for name, row in report.systems.items():
        cells = "".join(f"{row[c]:>14.4g}" if c in row else f"{'-':>14}" for c in cols)
        lines.append(f"{name:<14}{cells}")
    for c in report.comparisons:
        lines.append(
            f"nDCG@10 {c['b']} - {c['a']}: {c['delta']:+.4f} (95% CI {c['ci_low']:+.4f} .. {c['ci_high']:+.4f}; "
            f"{c['wins']}/{c['ties']}/{c['losses']} win/tie/loss over {c['queries']} queries)"
        )
    return lines
