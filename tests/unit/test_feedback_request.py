"""Relevance feedback carried by a rerank request: validation, and the refit query in the result."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from rerankd.feedback.refit import retrieve
from rerankd.strategies import rerank
from rerankd.types import FeedbackRequest
from tests.support.feedback import embeddings, request
from tests.support.scripted_engine import ScriptedEngine


def test_the_result_carries_a_query_vector_moved_toward_the_teacher() -> None:
    q, cands = embeddings(6)
    res = asyncio.run(rerank(request(feedback={"query_vector": q, "candidate_vectors": cands}), ScriptedEngine()))
    assert res.docids[0] == "d5"
    assert res.feedback is not None and len(res.feedback.query_vector) == 8
    assert res.feedback.shift > 0 and res.feedback.cosine < 1
    before = list(retrieve(np.array(q), np.array(cands), 6)[0]).index(5)
    after = list(retrieve(np.array(res.feedback.query_vector), np.array(cands), 6)[0]).index(5)
    assert after < before  # the teacher's top passage gained retriever rank


def test_top_n_cuts_the_ranking_but_the_refit_uses_every_candidate() -> None:
    q, cands = embeddings(6)
    fb = {"query_vector": q, "candidate_vectors": cands}
    full = asyncio.run(rerank(request(feedback=fb), ScriptedEngine()))
    cut = asyncio.run(rerank(request(feedback=fb, top_n=2), ScriptedEngine()))
    assert cut.docids == full.docids[:2]
    assert cut.feedback is not None and full.feedback is not None
    assert cut.feedback.query_vector == pytest.approx(full.feedback.query_vector)


def test_without_feedback_there_is_no_refit() -> None:
    assert asyncio.run(rerank(request(), ScriptedEngine())).feedback is None


@pytest.mark.parametrize(
    ("feedback", "message"),
    [
        ({"query_vector": [1.0, 0.0], "candidate_vectors": [[1.0, 0.0]] * 5}, "has 5 vectors for 6 candidates"),
        (
            {"query_vector": [1.0, 0.0], "candidate_vectors": [[1.0, 0.0]] * 5 + [[1.0]]},
            r"candidate_vectors\[5\] has 1 dimensions, query_vector has 2",
        ),
        ({"query_vector": [float("nan"), 0.0], "candidate_vectors": [[1.0, 0.0]] * 6}, "finite"),
        ({"query_vector": [1.0], "candidate_vectors": [[1.0]] * 6, "steps": -1}, "steps"),
        ({"query_vector": [1.0], "candidate_vectors": [[1.0]] * 6, "color": 1}, "color"),
    ],
)
def test_bad_feedback_is_rejected_naming_the_field(feedback: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message):
        request(feedback=feedback)


def test_feedback_request_defaults_match_refit_query() -> None:
    fb = FeedbackRequest(query_vector=[1.0], candidate_vectors=[[1.0]])
    assert (fb.steps, fb.temperature, fb.optimizer) == (50, 0.05, "gd")
