"""Score -> P(relevant) maps: fit (``rerankd calibrate``), load (worker start-up), apply.

A calibration is a monotone map from a (model, strategy, strategy settings)'s scores, and
within-query features of them, to the probability that a passage is relevant; fitted on run
journals with qrels (:mod:`rerankd.calibration.fit`), stored as JSON
(:mod:`rerankd.calibration.model`), found and loaded by workers
(:mod:`rerankd.calibration.store`).  It never reorders a ranking.  Without one, answers use the
rank-derived map :func:`rank_score`.  Pure numpy: no engine, no service.  (Fitting code is
imported from its module, so that strategies and the API import only the light parts.)
"""

from rerankd.calibration.features import FEATURES, query_features, rank_score, relevance_kind, relevance_score
from rerankd.calibration.model import Calibration, CalibrationError, settings_key

__all__ = [
    "FEATURES",
    "Calibration",
    "CalibrationError",
    "query_features",
    "rank_score",
    "relevance_kind",
    "relevance_score",
    "settings_key",
]
