"""Strategies by name: ``get_strategy("icr")`` is :func:`rerankd.strategies.icr.rerank`."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from rerankd.engines.base import Engine
from rerankd.types import STRATEGY_NAMES, RerankRequest, RerankResult

__all__ = ["StrategyFn", "get_strategy"]

StrategyFn = Callable[[RerankRequest, Engine], Awaitable[RerankResult]]


def get_strategy(name: str) -> StrategyFn:
    """The ``rerank`` coroutine of strategy ``name`` (its module ``rerankd.strategies.<name>``).

    Imported on first use, so that one strategy never pulls the others' dependencies, and by
    name, so that a strategy that runs another (``cascade``) needs no import cycle."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
    fn: StrategyFn = importlib.import_module(f"rerankd.strategies.{name}").rerank
    return fn
