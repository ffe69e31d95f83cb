"""Helpers shared by strategies: windows, result assembly (the rank-derived score,
:func:`rank_score`, lives in :mod:`rerankd.calibration.features`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from rerankd.calibration.features import rank_score
from rerankd.types import RankedDoc, RerankRequest, RerankResult, Usage

__all__ = ["build_result", "rank_score", "run_sync", "window_spans"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def run_sync(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a CPU-heavy synchronous step (prompt fitting, chunk planning, a refit) in a thread,
    so the event loop it is awaited on (other jobs, lease renewals) keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def window_spans(n: int, window_size: int, stride: int) -> list[tuple[int, int]]:
    """Back-to-front ``[start, end)`` windows over ``n`` items, as RankGPT slides them.

    The first window ends at ``n``; each next one moves ``stride`` towards the front;
    the last one starts at 0.  ``n <= window_size`` gives one window.
    """
    if n <= 0:
        return []
    spans: list[tuple[int, int]] = []
    end = n
    while True:
        start = max(0, end - window_size)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


def build_result(
    request: RerankRequest,
    order: Sequence[int],
    *,
    model: str,
    scores: Sequence[float] | None = None,
    usage: Usage | None = None,
    timings: dict[str, float] | None = None,
    warnings: Sequence[str] = (),
) -> RerankResult:
    """Assemble a result from ``order`` (indices into ``request.candidates``, best first).

    ``scores[i]`` (if given) is the score of candidate ``i``; it must be non-increasing
    along ``order``.  Without scores, :func:`rank_score` is used.
    """
    n = len(request.candidates)
    if sorted(order) != list(range(n)):
        raise AssertionError(f"strategy produced a non-permutation of {n} candidates: {list(order)}")
    ranking = []
    for rank, idx in enumerate(order, start=1):
        score = rank_score(rank, n) if scores is None else float(scores[idx])
        ranking.append(
            RankedDoc(
                docid=request.candidates[idx].docid,
                rank=rank,
                score=score,
                first_stage_rank=idx + 1,
            )
        )
    for a, b in itertools.pairwise(ranking):
        if b.score > a.score:
            raise AssertionError(f"scores not monotone with rank: {a} before {b}")
    if request.top_n is not None:
        ranking = ranking[: request.top_n]
    return RerankResult(
        qid=request.query.qid,
        ranking=ranking,
        strategy=request.strategy.name,
        model=model,
        usage=usage or Usage(),
        timings=dict(timings or {}),
        warnings=list(warnings),
    )
