"""Reliability of probabilities: ECE, Brier score, log loss, reliability bins."""

from __future__ import annotations

import numpy as np

__all__ = ["BINS", "brier", "ece", "log_loss", "reliability_bins", "summary"]

BINS = 10
_CLIP = 1e-6


def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the probabilities ``p`` against the 0/1 labels ``y``."""
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of ``y`` under ``p`` (``p`` clipped to ``[1e-6, 1 - 1e-6]``)."""
    q = np.clip(np.asarray(p, float), _CLIP, 1 - _CLIP)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> list[tuple[float, float, int]]:
    """``(mean predicted, observed rate, count)`` per equal-width bin of ``[0, 1]`` (empty bins left out)."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append((float(p[m].mean()), float(y[m].mean()), int(m.sum())))
    return out


def ece(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |predicted - observed| over equal-width bins."""
    n = max(1, np.asarray(p).size)
    return float(sum(c * abs(mp - rate) for mp, rate, c in reliability_bins(p, y, bins)) / n)


def summary(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``{"ece", "brier", "log_loss"}`` of ``p`` against ``y``."""
    return {"ece": ece(p, y), "brier": brier(p, y), "log_loss": log_loss(p, y)}
