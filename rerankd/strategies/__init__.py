"""Reranking strategies: plain async code for one query against one engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from rerankd.calibration.model import Calibration
from rerankd.engines.base import Engine
from rerankd.strategies.common import run_sync
from rerankd.strategies.registry import StrategyFn, get_strategy
from rerankd.types import RerankRequest, RerankResult

__all__ = ["StrategyFn", "get_strategy", "rerank", "rerank_many"]


async def rerank(request: RerankRequest, engine: Engine, calibration: Calibration | None = None) -> RerankResult:
    """Rerank one query with the strategy its request names.

    With ``request.feedback`` the query vector is then refit to the scores of *all*
    candidates (before any ``top_n`` cut) and returned as ``result.feedback``.
    With ``request.max_tokens_per_doc`` each candidate is first cut to that many tokens of the
    engine's tokenizer (a warning counts the cut ones).
    With ``calibration`` (for this model, strategy and settings) every passage gets its
    ``relevance``, computed over the whole ranking before the ``top_n`` cut.
    """
    if calibration is not None:
        result = calibration.apply(await rerank(request.model_copy(update={"top_n": None}), engine))
        if request.top_n is not None:
            result.ranking = result.ranking[: request.top_n]
        return result
    strategy = get_strategy(request.strategy.name)
    if request.max_tokens_per_doc is not None:
        from rerankd.strategies.truncate import truncate_documents

        limit = request.max_tokens_per_doc
        request, cut = await run_sync(truncate_documents, request, engine.tokenizer)
        result = await rerank(request, engine)
        if cut:
            result.warnings.append(f"max_tokens_per_doc: {cut} document(s) cut to {limit} tokens")
        return result
    if request.feedback is None:
        return await strategy(request, engine)
    from rerankd.feedback.refit import apply_feedback

    ranked = await strategy(request.model_copy(update={"top_n": None}), engine)
    result = await run_sync(apply_feedback, request, ranked)
    if request.top_n is not None:
        result.ranking = result.ranking[: request.top_n]
    return result


async def rerank_many(
    requests: Sequence[RerankRequest],
    engine: Engine,
    concurrency: int = 8,
    on_done: Callable[[int, RerankResult], None] | None = None,
) -> list[RerankResult]:
    """Rerank many queries, ``concurrency`` at a time, so their engine calls share batches.

    Results come back in input order; ``on_done(index, result)`` fires as each finishes.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    sem = asyncio.Semaphore(concurrency)
    results: list[RerankResult | None] = [None] * len(requests)

    async def one(i: int, req: RerankRequest) -> None:
        async with sem:
            res = await rerank(req, engine)
        results[i] = res
        if on_done is not None:
            on_done(i, res)

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    return [r for r in results if r is not None]
