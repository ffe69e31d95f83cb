"""The HTTP API (FastAPI): Cohere-compatible rerank, async jobs, batches, health, metrics."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the worker can import rerankd.api.presenters without FastAPI's app.
    if name == "create_app":
        from rerankd.api.app import create_app

        return create_app
    raise AttributeError(name)
