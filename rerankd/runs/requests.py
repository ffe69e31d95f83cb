"""Rerank requests of a query-file run, and strategy configs from ``key=value`` settings (the CLI's
``--strategy``/``--param``, the demo): one home for both."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rerankd.formats.inputs import QueryItem
from rerankd.types import STRATEGY_NAMES, RerankRequest, StrategyConfig

__all__ = ["build_requests", "strategy_config"]

_STRATEGY: TypeAdapter[StrategyConfig] = TypeAdapter(StrategyConfig)


def _coerce(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def strategy_config(name: str, params: list[str]) -> StrategyConfig:
    """Build and validate a strategy config from ``key=value`` pairs; ``ValueError`` naming the
    strategy, the setting and what is wrong (never pydantic's raw wording)."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"--strategy {name!r} is not a strategy; choose one of {', '.join(STRATEGY_NAMES)}")
    data: dict[str, Any] = {"name": name}
    for p in params:
        if "=" not in p:
            raise ValueError(f"--param expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        data[k.strip().replace("-", "_")] = _coerce(v.strip())
    try:
        return _STRATEGY.validate_python(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"][1:] or err["loc"])
            if err["type"] == "extra_forbidden":
                msgs.append(f"{loc!r} is not a setting of strategy {name!r}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                msgs.append(f"{loc}: {msg}" if loc else msg)
        raise ValueError("; ".join(msgs)) from None


def build_requests(items: list[QueryItem], cfg: StrategyConfig, top_k: int | None) -> list[RerankRequest]:
    """One request per query, with its first ``top_k`` candidates when given."""
    return [
        RerankRequest(query=it.query, candidates=it.candidates[:top_k] if top_k else it.candidates, strategy=cfg)
        for it in items
    ]
