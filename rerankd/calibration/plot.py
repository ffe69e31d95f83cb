"""Reliability diagrams (``rerankd calibrate --plot``, ``bench/calibration.py --plot``); needs matplotlib."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rerankd.calibration.metrics import BINS, ece, reliability_bins

__all__ = ["reliability_plot"]


def reliability_plot(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "", bins: int = BINS
) -> Path:
    """Observed relevance rate against mean predicted probability per bin, one line per
    ``name -> (probabilities, labels)``, next to the diagonal; written as PNG to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - optional dependency
        raise RuntimeError("--plot needs matplotlib: pip install 'rerankd[plot]'") from e
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, (p, y) in series.items():
        pts = reliability_bins(p, y, bins)
        xs, ys, counts = zip(*pts, strict=True) if pts else ((), (), ())
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece(p, y, bins):.3f})")
        for x, yv, c in zip(xs, ys, counts, strict=True):
            ax.annotate(str(c), (x, yv), textcoords="offset points", xytext=(3, -10), fontsize=7, color="grey")
    ax.set_xlabel("predicted P(relevant) (bin mean)")
    ax.set_ylabel("observed fraction relevant")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
