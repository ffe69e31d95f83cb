"""``cascade``: a cross-encoder student over the candidates, then an LLM strategy over the
student's ``top_k``; one job, one result.

The job runs where its LLM strategy runs (its queue is that strategy's: see
:mod:`rerankd.jobs.routing`) with the worker's own engine.  The student named by the config is a
second, small engine that the worker loads lazily on the first cascade job and keeps
(:func:`rerankd.engines.cross_encoder.shared_engine`, once per process and student; on CUDA when
present).  The final order is the LLM's order of the student's ``top_k``, then the student's
order of the rest, then the candidates beyond ``student_top_k`` in first-stage order.  Scores are
the documented rank-derived score (the two stages' scores are on different scales); each
stage's own scores stay in the stages' results, and their timings (``student_*``, ``llm_*``),
usage and warnings are merged into the one result.
"""

from __future__ import annotations

import time

from rerankd.engines.base import Engine
from rerankd.strategies.common import build_result, run_sync
from rerankd.strategies.pointwise import score_order, scores_of
from rerankd.types import CascadeConfig, PointwiseConfig, RerankRequest, RerankResult

__all__ = ["rerank"]


def _student(name: str) -> Engine:
    from rerankd.engines.cross_encoder import shared_engine

    return shared_engine(name)


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    """Student over ``student_top_k``, LLM strategy over the student's ``top_k``."""
    from rerankd.strategies.registry import get_strategy

    cfg = request.strategy
    assert isinstance(cfg, CascadeConfig)
    t0 = time.perf_counter()
    student = await run_sync(_student, cfg.student)
    t_load = time.perf_counter() - t0
    n = len(request.candidates)
    k1 = min(n, cfg.student_top_k or n)
    head = request.model_copy(
        update={"candidates": request.candidates[:k1], "strategy": PointwiseConfig(max_length=cfg.max_length)}
    )
    t1 = time.perf_counter()
    scores = await scores_of(head, student, cfg.max_length)
    student_order = score_order(scores)
    t_student = time.perf_counter() - t1
    k2 = min(k1, cfg.top_k)
    llm_request = RerankRequest(
        query=request.query,
        candidates=[request.candidates[i] for i in student_order[:k2]],
        strategy=cfg.llm,
    )
    t2 = time.perf_counter()
    llm = await get_strategy(cfg.llm.name)(llm_request, engine)
    t_llm = time.perf_counter() - t2
    index = {c.docid: i for i, c in enumerate(request.candidates)}
    order = [index[d.docid] for d in llm.ranking] + student_order[k2:] + list(range(k1, n))
    timings = {"student_load_s": t_load, "student_s": t_student, "llm_s": t_llm}
    timings.update({f"llm_{k}": v for k, v in llm.timings.items()})
    warnings = [f"llm ({cfg.llm.name}): {w}" for w in llm.warnings]
    return build_result(
        request,
        order,
        model=f"{student.model} > {llm.model}",
        usage=llm.usage,
        timings=timings,
        warnings=warnings,
    )
