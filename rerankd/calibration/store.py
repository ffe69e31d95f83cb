"""Where calibration files live and how a worker finds the ones for its model.

Default place: next to the model in the rerankd cache, ``$RERANKD_CACHE_DIR/models/<model>.calibrations/``
(``<model>`` with characters other than letters, digits, ``._-`` replaced by ``_``), one file per
(strategy, settings): ``<strategy>-<settings_key>.json``.  ``RERANKD_CALIBRATIONS`` names files
or folders instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from rerankd.calibration.model import Calibration, CalibrationError, settings_key
from rerankd.types import StrategyConfig

__all__ = ["CalibrationSet", "default_dir", "default_path", "load_calibrations"]

log = logging.getLogger(__name__)


def _safe(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", model).strip(".") or "model"


def default_dir(model: str, cache_dir: Path | None = None) -> Path:
    """The calibration folder of ``model`` in the cache (beside its converted folder)."""
    from rerankd.models.provision import cache_root

    return (cache_dir if cache_dir is not None else cache_root()) / "models" / f"{_safe(model)}.calibrations"


def default_path(cal: Calibration, cache_dir: Path | None = None) -> Path:
    """Where ``rerankd calibrate`` writes ``cal`` when no path is given."""
    return default_dir(cal.model, cache_dir) / f"{cal.strategy}-{cal.settings_key}.json"


class CalibrationSet:
    """The calibrations of one model, by (strategy name, settings key)."""

    def __init__(self, model: str, calibrations: Iterable[tuple[Path, Calibration]] = ()) -> None:
        self.model = model
        self._by_key: dict[tuple[str, str], tuple[Path, Calibration]] = {}
        for path, cal in calibrations:
            self.add(path, cal)

    def add(self, path: Path, cal: Calibration) -> None:
        key = (cal.strategy, cal.settings_key)
        if key in self._by_key:
            other = self._by_key[key][0]
            raise CalibrationError(
                f"calibration files {other} and {path} are both for {cal.model} {cal.strategy} with the same "
                "settings; keep one"
            )
        self._by_key[key] = (path, cal)

    def find(self, strategy: StrategyConfig) -> Calibration | None:
        """The calibration for ``strategy`` (name and every setting), or ``None``."""
        if not self._by_key:  # the usual case: no hash of the settings for every job
            return None
        hit = self._by_key.get((strategy.name, settings_key(strategy)))
        return hit[1] if hit is not None else None

    def __len__(self) -> int:
        return len(self._by_key)

    def describe(self) -> list[str]:
        return [f"{cal.id} ({cal.method} on {'+'.join(cal.features)}) from {p}" for p, cal in self._by_key.values()]


def load_calibrations(model: str, paths: Sequence[str | Path] | None, cache_dir: Path | None = None) -> CalibrationSet:
    """Load the calibrations of ``model`` (at worker start-up).

    ``paths=None``: every file in :func:`default_dir` (a missing folder means none).  Otherwise
    each path is a calibration file, which must exist, be valid and be for ``model``, or a
    folder whose ``*.json`` files are loaded (files for other models are skipped).  Any
    problem raises :class:`CalibrationError` naming the file.
    """
    found = CalibrationSet(model)
    if paths is None:
        folder = default_dir(model, cache_dir)
        entries: list[tuple[Path, bool]] = [(folder, False)] if folder.is_dir() else []
    else:
        entries = [(Path(p).expanduser(), True) for p in paths]
    for path, named in entries:
        if path.is_dir():
            for file in sorted(path.glob("*.json")):
                cal = Calibration.load(file)
                if cal.model != model:
                    log.info("calibration %s is for model %s, not %s; skipped", file, cal.model, model)
                    continue
                found.add(file, cal)
        elif named and not path.exists():
            raise CalibrationError(f"calibration file {path} (RERANKD_CALIBRATIONS) does not exist")
        else:
            cal = Calibration.load(path)
            if cal.model != model:
                raise CalibrationError(
                    f"calibration file {path} is for model {cal.model!r}; this worker hosts {model!r}"
                )
            found.add(path, cal)
    return found
