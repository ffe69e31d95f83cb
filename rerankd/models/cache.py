"""The rerankd cache folder: converted models, registered students, calibrations."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "RERANKD_CACHE_DIR"


def cache_root() -> Path:
    """The rerankd cache folder (``$RERANKD_CACHE_DIR`` or the platform's user cache dir)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("rerankd"))
