"""The rank-derived map and the within-query features a calibration may use.

Every feature is computed from one query's scores in rank order (best first) and is
non-increasing along the ranking, so a map that is non-decreasing in each feature never
reorders a ranking (see :mod:`rerankd.calibration.maps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rerankd.types import RankedDoc, RerankResult

__all__ = ["FEATURES", "RANK_ONLY_STRATEGIES", "query_features", "rank_score", "relevance_kind", "relevance_score"]

FEATURES = ("score", "zscore", "rank")
"""``score``: the strategy's own score; ``zscore``: the score standardised within the query
(0 when the query's scores are all equal); ``rank``: the rank-derived map ``1 - (rank - 1) / n``."""

RANK_ONLY_STRATEGIES = frozenset({"sliding_window", "full_ranking"})
"""Generation strategies: their score *is* the rank map, so only ``rank`` carries information."""


def rank_score(rank: int, n: int) -> float:
    """The documented rank-derived relevance: ``1 - (rank - 1) / n`` for 1-based ``rank`` among ``n``.

    A strictly decreasing map of the final rank into (0, 1]; rank 1 scores 1.0.  It is a
    position, the same numbers for every query: what generation strategies (an order, no
    score) and any uncalibrated answer honestly return.
    """
    return 1.0 - (rank - 1) / n


def relevance_score(doc: RankedDoc, n: int) -> float:
    """Cohere's ``relevance_score`` / TEI's ``score``: the calibrated probability when the result
    has one, else :func:`rank_score` of the document's rank among the ``n`` documents sent."""
    return doc.relevance if doc.relevance is not None else rank_score(doc.rank, n)


def relevance_kind(result: RerankResult | None) -> str:
    """``"calibrated"`` when ``result``'s passages carry calibrated probabilities, else ``"rank"``."""
    return "calibrated" if result is not None and result.calibration is not None else "rank"


def query_features(scores: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURES` for one query's scores, given best first."""
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    sd = float(s.std()) if n else 0.0
    z = (s - s.mean()) / sd if sd > 1e-12 else np.zeros(n)
    rank = 1.0 - np.arange(n, dtype=np.float64) / max(n, 1)
    return {"score": s, "zscore": z, "rank": rank}
