"""Query-side relevance feedback: refit_query and retrieve."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd.feedback.refit import refit_query, retrieve


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rank_of(q: np.ndarray, corpus: np.ndarray, row: int) -> int:
    idx, _ = retrieve(q, corpus, len(corpus))
    return int(np.flatnonzero(idx == row)[0]) + 1


@pytest.fixture()
def world() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    corpus = unit(rng.normal(size=(500, 32))).astype(np.float32)
    q = unit(corpus[:5].mean(0) + 0.5 * unit(rng.normal(size=32))).astype(np.float32)
    return q, corpus


def test_retrieve_orders_by_dot_product_with_ties_by_index() -> None:
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    idx, scores = retrieve(np.array([1.0, 0.0]), corpus, 3)
    assert idx.tolist() == [0, 2, 3] and scores.tolist() == [1.0, 1.0, 0.5]
    idx, _ = retrieve(np.array([0.0, 1.0]), corpus, 10)  # k larger than the corpus
    assert idx.tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="corpus_vecs must be"):
        retrieve(np.zeros(3), corpus, 2)


def test_teacher_top_passage_gains_retriever_rank(world: tuple[np.ndarray, np.ndarray]) -> None:
    q, corpus = world
    cand, s = retrieve(q, corpus, 20)
    favourite = int(cand[14])  # the retriever ranks it 15th; the teacher says it is the best
    teacher = s.astype(np.float64).copy()
    teacher[14] = s.max() + 0.1
    # A passage outside the candidates that resembles the favourite (what feedback should find).
    twin = unit(corpus[favourite] + 0.3 * unit(np.random.default_rng(1).normal(size=32)))
    corpus = np.vstack([corpus, twin.astype(np.float32)])
    twin_row = len(corpus) - 1

    before = rank_of(q, corpus, favourite), rank_of(q, corpus, twin_row)
    q2 = refit_query(q, corpus[cand], teacher)
    after = rank_of(q2, corpus, favourite), rank_of(q2, corpus, twin_row)
    assert after[0] < before[0] and after[0] <= 3, (before, after)
    assert after[1] < before[1], (before, after)
    assert q2.shape == q.shape and q2.dtype == q.dtype


def test_pairwise_loss_fixes_inversions_the_teacher_insists_on(world: tuple[np.ndarray, np.ndarray]) -> None:
    q, corpus = world
    cand, s = retrieve(q, corpus, 10)
    teacher = s[::-1].copy()  # the exact reverse order
    q2 = refit_query(q, corpus[cand], teacher, steps=200, lr=5e-3)
    new_scores = corpus[cand] @ q2
    # Most of the teacher's pairwise order is now reproduced.
    agree = sum(
        (new_scores[i] - new_scores[j]) * (teacher[i] - teacher[j]) > 0 for i in range(10) for j in range(i + 1, 10)
    )
    assert agree >= 0.8 * 45


def test_agreeing_teacher_leaves_the_query_unchanged_exactly(world: tuple[np.ndarray, np.ndarray]) -> None:
    q, corpus = world
    cand, _ = retrieve(q, corpus, 20)
    s = corpus[cand].astype(np.float64) @ q.astype(np.float64)
    # An increasing affine function of the retriever's scores: same order, same distribution
    # once mapped onto the retriever's scale, so both losses have zero gradient.
    teacher = 7.0 * s - 3.0
    assert np.array_equal(refit_query(q, corpus[cand], teacher), q)
    assert np.array_equal(refit_query(q, corpus[cand], s, teacher_scale="raw"), q)
    assert np.array_equal(refit_query(q, corpus[cand], teacher, optimizer="adam"), q)


def test_agreement_up_to_float32_rounding_barely_moves_the_query(world: tuple[np.ndarray, np.ndarray]) -> None:
    q, corpus = world
    cand, s32 = retrieve(q, corpus, 20)  # float32 scores: agree only to ~1e-7
    for teacher, scale in ((7.0 * s32 - 3.0, "match"), (s32, "raw")):
        q2 = refit_query(q, corpus[cand], teacher, teacher_scale=scale)  # type: ignore[arg-type]
        assert np.abs(q2 - q).max() < 1e-5


def test_teacher_with_same_order_keeps_query_nearly_unchanged(world: tuple[np.ndarray, np.ndarray]) -> None:
    q, corpus = world
    cand, s = retrieve(q, corpus, 20)
    teacher = np.exp(10 * s.astype(np.float64))  # monotone, not affine: same order, other shape
    q2 = refit_query(q, corpus[cand], teacher)
    cos = float(q2 @ q / (np.linalg.norm(q2) * np.linalg.norm(q)))
    assert cos > 0.98
    new_idx, _ = retrieve(q2, corpus, 20)
    assert new_idx[:5].tolist() == cand[:5].tolist()


def test_degenerate_inputs() -> None:
    q = np.array([1.0, 0.0], dtype=np.float32)
    cands = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert np.array_equal(refit_query(q, cands, [1.0, 1.0]), q)  # a teacher with no opinion
    assert np.array_equal(refit_query(q, cands[:1], [1.0]), q)  # one candidate: nothing to learn
    assert np.array_equal(refit_query(q, cands, [0.0, 1.0], steps=0), q)
    with pytest.raises(ValueError, match="teacher scores"):
        refit_query(q, cands, [1.0])
    with pytest.raises(ValueError, match="finite"):
        refit_query(q, cands, [1.0, float("nan")])
    with pytest.raises(ValueError, match="temperature"):
        refit_query(q, cands, [1.0, 0.0], temperature=0)
