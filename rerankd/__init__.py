"""rerankd: LLM listwise reranking (sliding window, full ranking, FIRST, ICR) as a library and a service."""

from rerankd.reranker import Reranker
from rerankd.types import (
    Candidate,
    FirstConfig,
    FullRankingConfig,
    ICRConfig,
    Query,
    RankedDoc,
    RerankRequest,
    RerankResult,
    SlidingWindowConfig,
)

__all__ = [
    "Candidate",
    "FirstConfig",
    "FullRankingConfig",
    "ICRConfig",
    "Query",
    "RankedDoc",
    "RerankRequest",
    "RerankResult",
    "Reranker",
    "SlidingWindowConfig",
]
__version__ = "0.1.0"
