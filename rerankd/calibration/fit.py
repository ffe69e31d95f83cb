"""Fitting a calibration: choose a map by cross-validation, report it on held-out queries.

Queries (never passages) are split: a seeded ``heldout`` fraction is kept aside; on the rest,
every candidate (method, features) is scored by ``folds``-fold cross-validated log loss
(folds by query), the best is refit on those queries and evaluated on the held-out ones next
to the rank-derived map; the map written to the file is the chosen one refit on *all* queries.

For strategies with a score of their own, the default candidates must *use* it: a map of the
position alone (isotonic on ``rank``, or a Platt fit whose score weights came out 0) gives every
query the same numbers, which is the rank map's flaw, so it is left out unless it is asked for
with ``--method``/``--features`` (or no candidate uses the score, which is then said).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.calibration.data import Samples, load_samples
from rerankd.calibration.features import RANK_ONLY_STRATEGIES
from rerankd.calibration.maps import IsotonicMap, PlattMap, fit_map
from rerankd.calibration.metrics import log_loss, summary
from rerankd.calibration.model import Calibration, CalibrationError, settings_key

__all__ = ["FitReport", "candidates_for", "fit_calibration", "fit_samples"]

Candidate = tuple[str, tuple[str, ...]]

SCORE_CANDIDATES: tuple[Candidate, ...] = (
    ("isotonic", ("score",)),
    ("isotonic", ("zscore",)),
    ("platt", ("score",)),
    ("platt", ("zscore",)),
    ("platt", ("score", "rank")),
    ("platt", ("score", "zscore", "rank")),
)
RANK_CANDIDATES: tuple[Candidate, ...] = (("isotonic", ("rank",)), ("platt", ("rank",)))


@dataclass
class FitReport:
    queries: int
    passages: int
    positives: int
    unjudged: int
    heldout_queries: int
    heldout: dict[str, float]
    heldout_rank_map: dict[str, float]
    cv: list[dict[str, Any]] = field(default_factory=list)
    heldout_data: dict[str, np.ndarray] = field(default_factory=dict)
    """``labels``, ``calibrated`` and ``rank_map`` probabilities of the held-out passages (for plots)."""


def candidates_for(strategy: str, method: str | None, features: Sequence[str] | None) -> list[Candidate]:
    """The (method, features) tried: given ones, or the defaults of the strategy."""
    if method is not None and features:
        return [(method, tuple(features))]
    pool = RANK_CANDIDATES if strategy in RANK_ONLY_STRATEGIES else SCORE_CANDIDATES
    out = [c for c in pool if (method is None or c[0] == method) and (not features or c[1] == tuple(features))]
    if not out:
        raise CalibrationError(f"no candidate map for method={method} features={features}")
    return out


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0.0 <= fraction < 1.0:
        raise CalibrationError(f"--heldout must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    k = round(n * fraction)
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def _cv_loss(samples: Samples, idx: list[int], cand: Candidate, folds: int, seed: int) -> float:
    if len(idx) < 2:
        X, y = samples.stack(idx)
        return log_loss(fit_map(cand[0], X, y, cand[1]).predict(X), y)
    k = min(folds, len(idx))
    order = np.random.default_rng(seed + 1).permutation(idx)
    losses, weights = [], []
    for f in range(k):
        test = order[f::k].tolist()
        train = [i for i in idx if i not in set(test)]
        Xtr, ytr = samples.stack(train)
        Xte, yte = samples.stack(test)
        losses.append(log_loss(fit_map(cand[0], Xtr, ytr, cand[1]).predict(Xte), yte))
        weights.append(yte.size)
    return float(np.average(losses, weights=weights))


def _uses_score(m: IsotonicMap | PlattMap) -> bool:
    """Whether the map depends on the strategy's score (not on the position alone)."""
    if isinstance(m, IsotonicMap):
        return m.features[0] != "rank"
    return any(w > 0 for f, w in zip(m.features, m.weights, strict=True) if f != "rank")


def _rank_map(samples: Samples, idx: list[int]) -> np.ndarray:
    return np.concatenate([samples.queries[i].features()["rank"] for i in idx]) if idx else np.zeros(0)


def fit_samples(
    samples: Samples,
    *,
    method: str | None = None,
    features: Sequence[str] | None = None,
    heldout: float = 0.2,
    folds: int = 5,
    seed: int = 0,
    grade: int = 1,
    qrels: Sequence[Path] = (),
) -> tuple[Calibration, FitReport]:
    """Choose, evaluate and fit a map on ``samples`` (see the module docstring)."""
    train, test = _split(len(samples.queries), heldout, seed)
    cands = candidates_for(samples.strategy, method, features)
    losses = [_cv_loss(samples, train, c, folds, seed) for c in cands]
    Xtr, ytr = samples.stack(train)
    forced = method is not None and bool(features)
    uses = [
        forced or samples.strategy in RANK_ONLY_STRATEGIES or _uses_score(fit_map(m, Xtr, ytr, f)) for m, f in cands
    ]
    if not any(uses):
        uses = [True] * len(cands)  # nothing uses the score: take the best (the CLI shows it)
    chosen = min((c for c, ok in zip(cands, uses, strict=True) if ok), key=lambda c: losses[cands.index(c)])
    cv: list[dict[str, Any]] = [
        {"method": m, "features": list(f), "cv_log_loss": loss, "uses_score": ok}
        for (m, f), loss, ok in zip(cands, losses, uses, strict=True)
    ]
    held: dict[str, float] = {}
    held_rank: dict[str, float] = {}
    held_data: dict[str, np.ndarray] = {}
    if test:
        Xte, yte = samples.stack(test)
        held_data = {
            "labels": yte,
            "calibrated": fit_map(chosen[0], Xtr, ytr, chosen[1]).predict(Xte),
            "rank_map": _rank_map(samples, test),
        }
        held = summary(held_data["calibrated"], yte)
        held_rank = summary(held_data["rank_map"], yte)
    X, y = samples.stack()
    final = fit_map(chosen[0], X, y, chosen[1])
    report = FitReport(
        queries=len(samples.queries),
        passages=int(y.size),
        positives=int(y.sum()),
        unjudged=sum(q.unjudged for q in samples.queries),
        heldout_queries=len(test),
        heldout=held,
        heldout_rank_map=held_rank,
        cv=cv,
        heldout_data=held_data,
    )
    cal = Calibration(
        model=samples.model,
        strategy=samples.strategy,
        settings=samples.settings,
        settings_key=settings_key(samples.settings),
        method=final.method,  # type: ignore[arg-type]
        features=final.features,
        params=final.params(),
        fit={
            "journals": samples.sources,
            "qrels": [str(p) for p in qrels],
            "grade": grade,
            "queries": report.queries,
            "passages": report.passages,
            "positives": report.positives,
            "unjudged": report.unjudged,
            "data_sha256": samples.data_sha256(),
            "heldout_fraction": heldout,
            "folds": folds,
            "seed": seed,
            "candidates": cv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        heldout={
            "queries": len(test),
            "passages": sum(samples.queries[i].n for i in test),
            "calibrated": held,
            "rank_map": held_rank,
        },
    )
    return cal, report


def fit_calibration(
    journals: Sequence[Path],
    qrels: Sequence[Path],
    *,
    grade: int = 1,
    method: str | None = None,
    features: Sequence[str] | None = None,
    heldout: float = 0.2,
    folds: int = 5,
    seed: int = 0,
) -> tuple[Calibration, FitReport]:
    """Read ``journals`` with ``qrels`` and fit (:func:`load_samples`, :func:`fit_samples`)."""
    samples = load_samples(journals, qrels, grade=grade)
    return fit_samples(
        samples, method=method, features=features, heldout=heldout, folds=folds, seed=seed, grade=grade, qrels=qrels
    )
