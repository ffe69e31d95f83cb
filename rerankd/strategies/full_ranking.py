"""Full ranking: one generation over every candidate (long-context listwise models)."""

from __future__ import annotations

import time

from rerankd.engines.base import Capability, Engine, require
from rerankd.prompts import Passage
from rerankd.strategies.common import build_result
from rerankd.strategies.sliding_window import rank_window
from rerankd.types import FullRankingConfig, RerankInputError, RerankRequest, RerankResult, Usage


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    cfg = request.strategy
    assert isinstance(cfg, FullRankingConfig)
    require(engine, Capability.GENERATE, cfg.name)
    n = len(request.candidates)
    if n > cfg.max_candidates:
        raise RerankInputError(
            f"full_ranking.max_candidates is {cfg.max_candidates}, got {n} candidates; "
            "raise max_candidates or use sliding_window"
        )
    t0 = time.perf_counter()
    usage = Usage()
    warnings: list[str] = []
    passages = [Passage(text=c.text, title=c.title) for c in request.candidates]
    order = await rank_window(engine, cfg, request.query.text, passages, usage, warnings, "full")
    return build_result(
        request,
        order,
        model=engine.model,
        usage=usage,
        timings={"rerank_s": time.perf_counter() - t0},
        warnings=warnings,
    )
