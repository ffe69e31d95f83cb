"""The HTTP API (FastAPI): Cohere-compatible rerank, async jobs, batches, health, metrics."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing a module of the package (its errors, schemas) must not build the app.
    if name == "create_app":
        from rerankd.api.app import create_app

        return create_app
    raise AttributeError(name)
