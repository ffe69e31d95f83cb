"""``pointwise``: a cross-encoder scores every (query, passage) pair on its own.

The engine is a :class:`~rerankd.engines.base.PairScorer` (the ``cross_encoder`` engine: a
distilled student).  ``score`` is the model's logit; ties keep their first-stage order.
"""

from __future__ import annotations

import time
from typing import cast

from rerankd.engines.base import Capability, Engine, PairScorer, require
from rerankd.strategies.common import build_result
from rerankd.types import PointwiseConfig, RerankRequest, RerankResult

__all__ = ["passage_text", "rerank", "score_order"]


def passage_text(title: str | None, text: str) -> str:
    """The passage a cross-encoder reads: ``title: text`` when there is a title."""
    return f"{title}: {text}" if title else text


def score_order(scores: list[float]) -> list[int]:
    """Indices by descending score; ties keep their input order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


async def scores_of(request: RerankRequest, engine: Engine, max_length: int | None) -> list[float]:
    """The engine's score of each candidate of ``request``, in candidate order."""
    require(engine, Capability.SCORE, request.strategy.name)
    scorer = cast(PairScorer, engine)
    texts = [passage_text(c.title, c.text) for c in request.candidates]
    return await scorer.score_pairs(request.query.text, texts, max_length)


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    """Order the candidates by the cross-encoder's score."""
    cfg = request.strategy
    assert isinstance(cfg, PointwiseConfig)
    t0 = time.perf_counter()
    scores = await scores_of(request, engine, cfg.max_length)
    return build_result(
        request,
        score_order(scores),
        model=engine.model,
        scores=scores,
        timings={"score_s": time.perf_counter() - t0},
    )
