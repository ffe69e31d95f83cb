"""``AsyncEngineArgs`` of the ``vllm`` engine's vLLM engines: generation, and the ICR attention
engines built from it, so that ICR scores with exactly the model configuration that generates.

The attention (pooling) engines get every argument of the generation engine (the user's
``engine_args`` included: tensor parallelism, quantization, revision, ``trust_remote_code``,
``hf_overrides`` such as RoPE scaling, dtype, ``max_model_len``, ...) but those in
:data:`NOT_FORWARDED` (they set their own, or the argument is about decoding), and the
``hf_overrides`` merge the user's with the ICR ones.  Pure dicts: no vLLM import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ATTENTION_OWN", "GENERATION_ONLY", "NOT_FORWARDED", "attention_engine_args", "generation_engine_args"]

GIB = 1 << 30

ATTENTION_OWN = frozenset(
    {
        "runner",
        "convert",
        "pooler_config",
        "enforce_eager",  # the rows are recorded in Python
        "enable_prefix_caching",  # every key of a prompt must be in the pass that records its rows
        "enable_chunked_prefill",
        "max_num_batched_tokens",
        "max_num_scheduled_tokens",
        "long_prefill_token_threshold",
        "long_prefill_token_threshold_adaptive",
        "gpu_memory_utilization",  # its own share (rerankd.engines.vllm.memory)
        "kv_cache_memory_bytes",
        "num_gpu_blocks_override",
        "compilation_config",
        "cudagraph_capture_sizes",
        "max_cudagraph_capture_size",
        "disable_log_stats",
    }
)
"""Arguments the attention engine sets itself."""

GENERATION_ONLY = frozenset(
    {
        "max_logprobs",
        "logprobs_mode",
        "logits_processors",
        "speculative_config",
        "spec_method",
        "spec_model",
        "spec_tokens",
        "enable_lora",
        "max_loras",
        "max_lora_rank",
        "max_cpu_loras",
        "lora_dtype",
        "lora_target_modules",
        "default_mm_loras",
        "generation_config",
        "override_generation_config",
        "structured_outputs_config",
        "reasoning_config",
        "reasoning_parser",
        "reasoning_parser_plugin",
        "async_scheduling",
    }
)
"""Arguments about decoding, meaningless (or refused) for a pooling engine."""

NOT_FORWARDED = ATTENTION_OWN | GENERATION_ONLY


def generation_engine_args(
    path: str,
    *,
    dtype: str,
    max_model_len: int | None,
    enforce_eager: bool,
    enable_prefix_caching: bool,
    max_logprobs: int,
    seed: int,
    max_num_seqs: int | None,
    kv_cache_gib: float | None,
    engine_args: Mapping[str, Any],
) -> dict[str, Any]:
    """``AsyncEngineArgs`` of the generation engine: the settings, then ``engine_args`` as they are
    (``kv_cache_gib``: vLLM's ``kv_cache_memory_bytes``, given on CPU)."""
    kwargs: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "enforce_eager": enforce_eager,
        "enable_prefix_caching": enable_prefix_caching,
        "max_logprobs": max_logprobs,
        "seed": seed,
        "disable_log_stats": True,  # our stat recorder still gets the scheduler's figures
    }
    if max_num_seqs is not None:
        kwargs["max_num_seqs"] = max_num_seqs
    if kv_cache_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
    kwargs.update(engine_args)
    return kwargs


def attention_engine_args(
    generation_args: Mapping[str, Any],
    *,
    depth: int,
    full_layers: int,
    architecture: str,
    max_model_len: int,
    icr_overrides: Mapping[str, Any] | None = None,
    on_cpu: bool,
    kv_cache_gib: float,
    gpu_memory_utilization: float,
) -> dict[str, Any]:
    """``AsyncEngineArgs`` of the pooling engine that runs the first ``depth`` layers.

    ``generation_args``: the generation engine's arguments (built even where it does not run);
    ``icr_overrides``: further ``hf_overrides`` of the plugin's model (e.g. its LM head).
    """
    user_overrides = generation_args.get("hf_overrides") or {}
    if not isinstance(user_overrides, Mapping):
        raise ValueError(
            "ICR on the vllm engine needs hf_overrides as a dict (it adds the ICR architecture and "
            f"depth to it), got {type(user_overrides).__name__}; or start with attention='off'"
        )
    kwargs = {k: v for k, v in generation_args.items() if k not in NOT_FORWARDED}
    kwargs.update(
        {
            "runner": "pooling",
            "hf_overrides": {
                **user_overrides,
                "architectures": [architecture],
                "num_hidden_layers": depth,
                "rerankd_icr_full_layers": full_layers,
                **(icr_overrides or {}),
            },
            "max_model_len": max_model_len,
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len, 8192),
            "disable_log_stats": True,
        }
    )
    if on_cpu:
        kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
    else:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    return kwargs
