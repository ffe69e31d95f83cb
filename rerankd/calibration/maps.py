"""Monotone maps from features to P(relevant): isotonic regression and Platt scaling (numpy only).

Both are non-decreasing in every feature they use: isotonic regression by construction (pool
adjacent violators), Platt scaling by keeping its weights non-negative (a feature whose weight
would be negative is dropped and the rest refit).  Since every feature is non-increasing along a
ranking (:mod:`rerankd.calibration.features`), a map never reorders the strategy's ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["EPS", "IsotonicMap", "PlattMap", "fit_map", "pav", "sigmoid"]

EPS = 1e-3
"""Probabilities are kept in ``[EPS, 1 - EPS]``: a judged sample is never proof of certainty."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))  # stable for large |x|


def pav(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares fit of ``y`` on ``x`` by pool adjacent violators.

    Returns knots ``(xs, ys)``: for each pooled block its lowest and highest ``x`` with the
    block's weighted mean, so linear interpolation between knots is the fitted map.
    """
    order = np.argsort(x, kind="mergesort")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    w = np.ones_like(y) if w is None else np.asarray(w, float)[order]
    # equal x values form one block first (the map is a function of x)
    ux, start = np.unique(x, return_index=True)
    sums = np.add.reduceat(w * y, start)
    weights = np.add.reduceat(w, start)
    means: list[float] = []
    wts: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for i in range(ux.size):
        means.append(sums[i] / weights[i])
        wts.append(weights[i])
        lo.append(ux[i])
        hi.append(ux[i])
        while len(means) > 1 and means[-2] >= means[-1]:
            m2, w2, h2 = means.pop(), wts.pop(), hi.pop()
            lo.pop()
            means[-1] = (means[-1] * wts[-1] + m2 * w2) / (wts[-1] + w2)
            wts[-1] += w2
            hi[-1] = h2
    xs: list[float] = []
    ys: list[float] = []
    for a, b, m in zip(lo, hi, means, strict=True):
        xs += [a] if a == b else [a, b]
        ys += [m] if a == b else [m, m]
    return np.array(xs), np.array(ys)


class IsotonicMap:
    """Isotonic regression on one feature; linear between knots, flat beyond the ends."""

    method = "isotonic"

    def __init__(self, feature: str, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> None:
        self.features = [feature]
        self.xs = np.asarray(xs, float)
        self.ys = np.clip(np.asarray(ys, float), EPS, 1 - EPS)
        if self.xs.size == 0 or self.xs.size != self.ys.size:
            raise ValueError("isotonic map: knots xs and ys must be non-empty and of equal length")
        if np.any(np.diff(self.xs) < 0) or np.any(np.diff(self.ys) < 0):
            raise ValueError("isotonic map: knots must be non-decreasing in x and in y")

    @classmethod
    def fit(cls, X: Mapping[str, np.ndarray], y: np.ndarray, feature: str) -> IsotonicMap:
        xs, ys = pav(X[feature], y)
        return cls(feature, xs, ys)

    def predict(self, X: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(np.interp(np.asarray(X[self.features[0]], float), self.xs, self.ys))

    def params(self) -> dict[str, Any]:
        return {"xs": self.xs.tolist(), "ys": self.ys.tolist()}


class PlattMap:
    """Logistic regression ``sigmoid(bias + sum_i w_i (f_i - mean_i) / sd_i)`` with ``w_i >= 0``."""

    method = "platt"

    def __init__(
        self,
        features: Sequence[str],
        weights: Sequence[float],
        bias: float,
        means: Sequence[float],
        sds: Sequence[float],
    ) -> None:
        self.features = list(features)
        self.weights = np.asarray(weights, float)
        self.bias = float(bias)
        self.means = np.asarray(means, float)
        self.sds = np.asarray(sds, float)
        n = len(self.features)
        if not (self.weights.size == self.means.size == self.sds.size == n):
            raise ValueError("platt map: features, weights, means and sds must have equal lengths")
        if np.any(self.weights < 0) or np.any(self.sds <= 0):
            raise ValueError("platt map: weights must be >= 0 (monotone) and sds > 0")
        if not np.all(np.isfinite(np.r_[self.weights, self.bias, self.means, self.sds])):
            raise ValueError("platt map: parameters must be finite")

    def _design(self, X: Mapping[str, np.ndarray]) -> np.ndarray:
        cols = [(np.asarray(X[f], float) - m) / s for f, m, s in zip(self.features, self.means, self.sds, strict=True)]
        return np.stack(cols, axis=1) if cols else np.zeros((len(next(iter(X.values()))), 0))

    def predict(self, X: Mapping[str, np.ndarray]) -> np.ndarray:
        p = sigmoid(self.bias + self._design(X) @ self.weights)
        return np.clip(p, EPS, 1 - EPS)

    def params(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "means": self.means.tolist(),
            "sds": self.sds.tolist(),
        }

    @classmethod
    def fit(cls, X: Mapping[str, np.ndarray], y: np.ndarray, features: Sequence[str], l2: float = 1e-3) -> PlattMap:
        """Newton's method on the (slightly L2-regularised) log loss; features whose weight comes
        out negative are dropped one at a time (the most negative first) and the rest refit."""
        y = np.asarray(y, float)
        active = list(features)
        means = [float(np.mean(X[f])) for f in features]
        sds = [float(np.std(X[f])) or 1.0 for f in features]
        cols = {f: (np.asarray(X[f], float) - m) / s for f, m, s in zip(features, means, sds, strict=True)}
        while True:
            A = np.stack([cols[f] for f in active], axis=1) if active else None
            w, b = _logistic(A, y, l2)
            if w.size == 0 or np.all(w >= 0):
                break
            active.pop(int(np.argmin(w)))
        fitted = dict(zip(active, w, strict=True))
        weights = [max(0.0, float(fitted.get(f, 0.0))) for f in features]  # dropped features weigh 0
        return cls(features, weights, b, means, sds)


def _logistic(A: np.ndarray | None, y: np.ndarray, l2: float, iters: int = 100) -> tuple[np.ndarray, float]:
    n = y.size
    k = 0 if A is None else A.shape[1]
    D = np.ones((n, 1)) if A is None else np.hstack([A, np.ones((n, 1))])
    theta = np.zeros(k + 1)
    p0 = float(np.clip(y.mean(), EPS, 1 - EPS))
    theta[-1] = np.log(p0 / (1 - p0))
    reg = np.full(k + 1, l2 * n)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = sigmoid(D @ theta)
        grad = D.T @ (p - y) + reg * theta
        H = (D * (p * (1 - p))[:, None]).T @ D + np.diag(reg) + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(H, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fit_map(method: str, X: Mapping[str, np.ndarray], y: np.ndarray, features: Sequence[str]) -> IsotonicMap | PlattMap:
    """Fit ``method`` (``isotonic``: exactly one feature; ``platt``: one or more) on ``X``, ``y``."""
    if method == "isotonic":
        if len(features) != 1:
            raise ValueError(f"isotonic regression uses exactly one feature, got {list(features)}")
        return IsotonicMap.fit(X, y, features[0])
    if method == "platt":
        if not features:
            raise ValueError("platt scaling needs at least one feature")
        return PlattMap.fit(X, y, features)
    raise ValueError(f"unknown calibration method {method!r}; use isotonic or platt")


def map_from_params(method: str, features: Sequence[str], params: Mapping[str, Any]) -> IsotonicMap | PlattMap:
    """Rebuild a map from a calibration file's ``method``, ``features`` and ``params`` (validated)."""
    if method == "isotonic":
        if len(features) != 1:
            raise ValueError(f"isotonic map with {len(features)} features; it uses exactly one")
        return IsotonicMap(features[0], params["xs"], params["ys"])
    if method == "platt":
        return PlattMap(features, params["weights"], params["bias"], params["means"], params["sds"])
    raise ValueError(f"unknown calibration method {method!r}")
