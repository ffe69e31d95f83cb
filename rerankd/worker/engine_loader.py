"""The worker's engine, loaded from the settings (``RERANKD_ENGINE``: a name, or ``module:Class``)."""

from __future__ import annotations

import importlib
from typing import cast

from rerankd.config import Settings
from rerankd.engines.base import Engine
from rerankd.engines.options import validate_class_options

__all__ = ["build_engine"]


def build_engine(settings: Settings) -> Engine:
    """Load the engine named by the settings: a registered engine name, or ``module:Class``
    (``Class.load(model, **options)``, else ``Class(model, **options)``)."""
    options = settings.engine_options_with_device()
    if ":" in settings.engine:
        module, _, attr = settings.engine.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"RERANKD_ENGINE={settings.engine!r}: cannot import {attr} from {module}: {e}") from e
        loader = getattr(cls, "load", None)
        options = validate_class_options(cls, options)
        engine = loader(settings.model, **options) if callable(loader) else cls(settings.model, **options)
        return cast(Engine, engine)
    from rerankd.engines.factory import load_engine

    return load_engine(settings.engine, settings.model, **options)
