"""The ``cross_encoder`` engine (distilled students) and the student folders it serves.

:func:`shared_engine` gives the one engine per (student, device) of a process: a cascade job
loads its student lazily, once per worker, next to the worker's LLM engine.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine

__all__ = ["shared_engine"]

_LOCK = threading.Lock()
_SHARED: dict[tuple[str, str], CrossEncoderEngine] = {}


def shared_engine(student: str, device: str = "auto") -> CrossEncoderEngine:
    """The process's cross-encoder engine for ``student`` on ``device``, loaded on first use."""
    key = (student, device)
    with _LOCK:
        engine = _SHARED.get(key)
        if engine is None:
            from rerankd.engines.cross_encoder.engine import CrossEncoderEngine

            engine = CrossEncoderEngine.load(student, device=device)
            _SHARED[key] = engine
        return engine
