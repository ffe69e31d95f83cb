"""Query-side relevance feedback: refit a dense query vector to the reranker's judgement.

Following ReFIT (Reddy et al., 2023, arXiv:2305.11744; the relevance-feedback section of
FIRST, Reddy et al., 2024): after a dense retriever returns candidates and a reranker
scores them, the *query embedding* (never the encoder) is moved so that the retriever's
scores over the candidates agree with the reranker's; a second retrieval with the new
vector can then find relevant passages the first one missed (Recall@K can improve, which
reranking alone never does).

Loss, over the ``n`` candidates with embeddings ``C`` (rows) and retriever scores ``s = C q``:

* **KL distillation**: ``KL(p_teacher || p_retriever)`` with ``p_retriever = softmax(s / T)``
  and ``p_teacher = softmax(t' / T)``.  ``t'`` are the teacher scores mapped affinely onto
  the *initial* retriever scores' mean and standard deviation (``teacher_scale="match"``):
  teacher scores come on arbitrary scales (FIRST: probabilities; ICR: attention mass), and
  matching the spread lets one temperature serve both sides while preserving every
  relative gap of the teacher.  So the update reorders the candidates rather than merely
  sharpening or flattening the retriever's distribution (which would only rescale ``q``).
* **pairwise rank loss**: the mean over teacher-ordered pairs ``t_i > t_j`` of
  ``max(0, margin - (s_i - s_j) / T)`` (a hinge on the retriever's margin), which keeps
  pushing wherever the retriever still inverts the teacher's order.

Both terms vanish, with zero gradient, when the retriever already agrees with the teacher:
when the teacher's scores are an increasing affine function of the retriever's (then
``t' = s`` exactly) and, with the default ``margin=0``, every teacher-ordered pair is
already ordered the same way.  The query is then returned unchanged.

Optimiser: ``q`` alone is updated for ``steps`` steps (float64, a few ms per query), by plain
gradient descent by default.  Its steps are proportional to the gradient, so a teacher that
*nearly* agrees moves the query only a little, and exact agreement not at all.  Adam
(``optimizer="adam"``) normalises each coordinate's step to about ``lr`` whatever the size of
the gradient, so even a rounding-level disagreement (e.g. float32 teacher scores that equal
the retriever's) would move the query by a full step; use it only with a teacher that
genuinely disagrees.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

from rerankd.types import FeedbackResult, RerankRequest, RerankResult

__all__ = ["apply_feedback", "refit_query", "retrieve"]

log = logging.getLogger(__name__)


def retrieve(query_vec: np.ndarray, corpus_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``corpus_vecs`` by dot product with ``query_vec``.

    Returns ``(indices, scores)``, best first; ties go to the lower index.  With
    L2-normalised vectors the dot product is the cosine similarity.
    """
    q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    corpus = np.asarray(corpus_vecs, dtype=np.float32)
    if corpus.ndim != 2 or corpus.shape[1] != q.shape[0]:
        raise ValueError(f"corpus_vecs must be (n, {q.shape[0]}), got {corpus.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = corpus @ q
    k = min(k, scores.shape[0])
    # Stable sort on (-score, index) among the top-k candidates.
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = np.lexsort((top, -scores[top]))
    idx = top[order]
    return idx, scores[idx]


def refit_query(
    query_vec: np.ndarray,
    candidate_vecs: np.ndarray,
    teacher_scores: np.ndarray | list[float],
    *,
    steps: int = 50,
    lr: float | None = None,
    temperature: float = 0.05,
    kl_weight: float = 1.0,
    rank_weight: float = 1.0,
    margin: float = 0.0,
    teacher_scale: Literal["match", "raw"] = "match",
    optimizer: Literal["gd", "adam"] = "gd",
    tol: float = 1e-12,
) -> np.ndarray:
    """A query vector moved toward the teacher's judgement of the candidates.

    Args:
        query_vec: the retriever's query embedding, shape ``(d,)``.
        candidate_vecs: embeddings of the reranked candidates, shape ``(n, d)``.
        teacher_scores: the reranker's score for each candidate (higher = more relevant),
            in the same order as ``candidate_vecs``; e.g. ``RankedDoc.score``.
        steps: optimiser steps (50).  A few dozen: the loss is convex in ``q``, and more
            steps mostly add drift away from the original query.
        lr: learning rate; ``None`` picks 5e-3 for ``gd`` and 2e-3 for ``adam``.  For ``gd``
            the KL gradient is ``C^T (p_retriever - p_teacher) / T``, at most about ``1/T``
            = 20 in norm for unit-norm candidates, so a step moves the query by at most
            ~0.1 and far less once the distributions are close; the loss's curvature is
            ~``1/T^2`` along the candidates, so ``lr`` well under ``2 T^2`` (= 5e-3 at
            T=0.05) keeps plain descent stable.  For ``adam`` each coordinate moves by about
            ``lr`` per step (``lr * sqrt(d)`` ~ 0.04 for d=384).
        temperature: softmax temperature ``T`` of both distributions and the scale of the
            pairwise margins (0.05: the inverse of the scale 20 that MiniLM/MPNet-style
            retrievers are trained with, so ``s / T`` are the retriever's own logits).
        kl_weight: weight of the KL distillation term (1.0).
        rank_weight: weight of the pairwise hinge term (1.0).
        margin: the hinge's margin in logit units (0.0, so a pair already in the teacher's
            order contributes nothing; > 0 keeps separating agreeing pairs).
        teacher_scale: ``"match"`` maps teacher scores affinely onto the initial retriever
            scores' mean and std (see the module doc); ``"raw"`` uses them as given, which
            suits a teacher already on the retriever's scale.
        optimizer: ``"gd"`` (plain gradient descent, default) or ``"adam"``; see the module doc.
        tol: if the initial gradient norm is below this, the query is returned unchanged.

    Returns:
        The refit query, same shape and dtype as ``query_vec`` (not re-normalised: a dot
        product ranking does not depend on the query's norm).
    """
    q0 = np.asarray(query_vec)
    cands = np.asarray(candidate_vecs, dtype=np.float64)
    t = np.asarray(teacher_scores, dtype=np.float64).reshape(-1)
    if cands.ndim != 2 or cands.shape[1] != q0.reshape(-1).shape[0]:
        raise ValueError(f"candidate_vecs must be (n, {q0.reshape(-1).shape[0]}), got {cands.shape}")
    if t.shape[0] != cands.shape[0]:
        raise ValueError(f"got {t.shape[0]} teacher scores for {cands.shape[0]} candidates")
    if not np.isfinite(t).all():
        raise ValueError("teacher_scores must be finite")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if lr is None:
        lr = 5e-3 if optimizer == "gd" else 2e-3
    if steps < 0 or lr < 0:
        raise ValueError("steps and lr must be >= 0")
    if optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
    if cands.shape[0] < 2 or steps == 0:
        return q0.copy()

    C = torch.from_numpy(cands)
    q_init = torch.from_numpy(q0.reshape(-1).astype(np.float64))
    s0 = C @ q_init
    teacher = torch.from_numpy(t)
    if teacher_scale == "match":
        t_std = teacher.std(unbiased=False)
        if float(t_std) == 0.0:  # the teacher cannot tell the candidates apart
            return q0.copy()
        teacher = (teacher - teacher.mean()) / t_std * s0.std(unbiased=False) + s0.mean()
    elif teacher_scale != "raw":
        raise ValueError(f"teacher_scale must be 'match' or 'raw', got {teacher_scale!r}")
    log_p_teacher = torch.log_softmax(teacher / temperature, dim=0)
    p_teacher = log_p_teacher.exp()
    # Teacher-ordered pairs (i above j); ties in the teacher's scores make no pair.
    better = (t[:, None] > t[None, :]).nonzero()
    pairs_i = torch.from_numpy(better[0])
    pairs_j = torch.from_numpy(better[1])

    def loss_fn(q: torch.Tensor) -> torch.Tensor:
        logits = (C @ q) / temperature
        loss = kl_weight * torch.sum(p_teacher * (log_p_teacher - torch.log_softmax(logits, dim=0)))
        if rank_weight and pairs_i.numel():
            gaps = logits[pairs_i] - logits[pairs_j]
            loss = loss + rank_weight * torch.relu(margin - gaps).mean()
        return loss

    q = q_init.clone().requires_grad_(True)
    opt: torch.optim.Optimizer = torch.optim.SGD([q], lr=lr) if optimizer == "gd" else torch.optim.Adam([q], lr=lr)
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(q)
        loss.backward()
        if step == 0:
            assert q.grad is not None
            if float(q.grad.norm()) < tol:
                log.debug("refit: retriever already agrees with the teacher; query unchanged")
                return q0.copy()
        opt.step()
    out = q.detach().numpy().astype(q0.dtype, copy=False).reshape(q0.shape)
    return out


def apply_feedback(request: RerankRequest, result: RerankResult) -> RerankResult:
    """``result`` with ``feedback`` set: ``request.feedback.query_vector`` refit to the
    result's scores of every candidate (see :func:`refit_query`)."""
    fb = request.feedback
    if fb is None:
        raise ValueError("the request has no feedback embeddings")
    scores = {d.docid: d.score for d in result.ranking}
    missing = [c.docid for c in request.candidates if c.docid not in scores]
    if missing:
        raise ValueError(f"the result has no score for {len(missing)} candidates (first {missing[0]!r})")
    teacher = [scores[c.docid] for c in request.candidates]
    q0 = np.asarray(fb.query_vector, dtype=np.float64)
    q1 = refit_query(
        q0,
        np.asarray(fb.candidate_vectors, dtype=np.float64),
        teacher,
        steps=fb.steps,
        lr=fb.lr,
        temperature=fb.temperature,
        kl_weight=fb.kl_weight,
        rank_weight=fb.rank_weight,
        optimizer=fb.optimizer,
    )
    norms = float(np.linalg.norm(q0) * np.linalg.norm(q1))
    cosine = float(q0 @ q1 / norms) if norms > 0 else 0.0
    feedback = FeedbackResult(query_vector=[float(x) for x in q1], shift=float(np.linalg.norm(q1 - q0)), cosine=cosine)
    return result.model_copy(update={"feedback": feedback})
