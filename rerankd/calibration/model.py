"""A calibration file: which scores it applies to, its map, how it was fit and how well it did.

JSON, one calibration per file::

    {"rerankd_calibration": 1, "model": "...", "strategy": "icr", "settings": {...},
     "settings_key": "<16 hex>", "method": "isotonic" | "platt", "features": ["score"],
     "params": {...}, "fit": {...}, "heldout": {...}}

``settings`` is the strategy config the scores came from; ``settings_key`` a stable hash of it
(:func:`settings_key`).  A worker applies the calibration to a job only when the job's strategy
config has the same key, on the same model: scores of other settings live on other scales.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from rerankd.calibration.features import FEATURES, query_features
from rerankd.calibration.maps import IsotonicMap, PlattMap, map_from_params
from rerankd.types import RerankResult, StrategyConfig

__all__ = ["FILE_VERSION", "IRRELEVANT_FIELDS", "Calibration", "CalibrationError", "settings_key"]

FILE_VERSION = 1

IRRELEVANT_FIELDS = frozenset({"name"})
"""Strategy config fields left out of :func:`settings_key` (``name`` is matched on its own).
Every other field changes the scores (windows, prompts, ICR's calibration mode, passage order,
word cap, layer window), so it counts."""


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file."""


def settings_key(strategy: StrategyConfig | Mapping[str, Any]) -> str:
    """A stable hash (16 hex digits) of a strategy config, minus :data:`IRRELEVANT_FIELDS`."""
    data = strategy if isinstance(strategy, Mapping) else strategy.model_dump(mode="json")
    kept = {k: v for k, v in data.items() if k not in IRRELEVANT_FIELDS}
    blob = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Calibration(BaseModel):
    """One fitted map for a (model, strategy, strategy settings)."""

    model_config = ConfigDict(extra="forbid")

    rerankd_calibration: Literal[1] = 1
    model: str = Field(min_length=1)
    strategy: str = Field(min_length=1)
    settings: dict[str, Any]
    settings_key: str
    method: Literal["isotonic", "platt"]
    features: list[str] = Field(min_length=1)
    params: dict[str, Any]
    fit: dict[str, Any] = Field(default_factory=dict)
    """Provenance: journals, qrels, grade, counts, the fit data's sha256, candidates tried."""
    heldout: dict[str, Any] = Field(default_factory=dict)
    """Figures on the held-out queries: calibrated and rank-map ECE, Brier score, log loss."""
    _map: IsotonicMap | PlattMap | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Calibration:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
        if self.settings.get("name", self.strategy) != self.strategy:
            raise ValueError(f"settings name {self.settings.get('name')!r} is not the strategy {self.strategy!r}")
        want = settings_key(self.settings)
        if self.settings_key != want:
            raise ValueError(f"settings_key {self.settings_key!r} does not match its settings (expected {want!r})")
        try:
            map_from_params(self.method, self.features, self.params)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"params of the {self.method} map: {e}") from None
        return self

    @property
    def map(self) -> IsotonicMap | PlattMap:
        if self._map is None:
            self._map = map_from_params(self.method, self.features, self.params)
        return self._map

    @property
    def id(self) -> str:
        """Short name of this calibration: strategy, settings key and fit-data hash."""
        data = str(self.fit.get("data_sha256", ""))[:8]
        return f"{self.strategy}-{self.settings_key}" + (f"-{data}" if data else "")

    def predict_query(self, scores: np.ndarray | list[float]) -> np.ndarray:
        """P(relevant) for one query's scores, given best first (non-increasing along the ranking)."""
        p = self.map.predict(query_features(scores))
        # identical features give identical p; this only removes float noise at equal scores
        return np.minimum.accumulate(p) if p.size else p

    def apply(self, result: RerankResult) -> RerankResult:
        """``result`` with ``relevance`` set on every passage and ``calibration`` naming this map.

        ``result`` must hold the whole ranking (before any ``top_n`` cut): the within-query
        features see every passage.
        """
        if result.strategy != self.strategy:
            raise ValueError(f"calibration {self.id} is for strategy {self.strategy}, not {result.strategy}")
        p = self.predict_query([d.score for d in result.ranking])
        ranking = [d.model_copy(update={"relevance": float(v)}) for d, v in zip(result.ranking, p, strict=True)]
        return result.model_copy(update={"ranking": ranking, "calibration": self.id})

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> Path:
        """Write the file atomically (tmp + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Calibration:
        """Read and validate a calibration file; :class:`CalibrationError` names the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CalibrationError(f"calibration file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"calibration file {path} cannot be read: {e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"calibration file {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or "rerankd_calibration" not in data:
            raise CalibrationError(f"calibration file {path} is not a rerankd calibration (no rerankd_calibration key)")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "file"
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise CalibrationError(f"calibration file {path} is invalid: {loc}: {msg}") from None
