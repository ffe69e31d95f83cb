"""Small job-store payloads: a rerank request and a finished result."""

from __future__ import annotations

from rerankd.types import Candidate, Query, RankedDoc, RerankRequest, RerankResult


def small_request(n: int = 3) -> RerankRequest:
    return RerankRequest(query=Query(text="q"), candidates=[Candidate(docid=f"d{i}", text=f"t{i}") for i in range(n)])


def small_result() -> RerankResult:
    return RerankResult(
        ranking=[RankedDoc(docid="d0", rank=1, score=1.0, first_stage_rank=1)],
        strategy="sliding_window",
        model="m",
    )
