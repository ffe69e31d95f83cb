"""Rerank requests carrying relevance feedback, and embeddings for them."""

from __future__ import annotations

from typing import Any

import numpy as np

from rerankd.types import Candidate, Query, RerankRequest, SlidingWindowConfig


def unit(v: np.ndarray) -> list[float]:
    return [float(x) for x in v / np.linalg.norm(v)]


def request(n: int = 6, feedback: dict[str, Any] | None = None, top_n: int | None = None) -> RerankRequest:
    """A sliding-window request of ``n`` candidates; the scripted engine ranks by ``rel=N`` (the last
    candidate is the most relevant)."""
    cands = [Candidate(docid=f"d{i}", text=f"passage {i} rel={i}") for i in range(n)]
    return RerankRequest(
        query=Query(qid="q", text="query"),
        candidates=cands,
        strategy=SlidingWindowConfig(),
        top_n=top_n,
        feedback=feedback,  # type: ignore[arg-type]  # a dict, validated as part of the request
    )


def embeddings(n: int, dim: int = 8) -> tuple[list[float], list[list[float]]]:
    """A query closest to d0 and farthest from d{n-1}: the retriever's order is the reverse of
    the teacher's."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=dim)
    cands = [unit(base + 0.6 * i * rng.normal(size=dim)) for i in range(n)]
    return unit(base), cands
