"""ICR attention on the ``vllm`` engine: pooling ``AsyncLLM``\\ s running our plugin's model.

vLLM runs one runner type per engine (``generate`` or ``pooling``), so ICR gets its own
``AsyncLLM`` next to the generation one, on the same event loop thread, with the ICR
architecture of :mod:`rerankd.engines.vllm_icr` (``hf_overrides``), eager mode and whole
prompts per step (no chunked prefill, no prefix caching: every key of a prompt must be in the
forward pass that records its query rows).

Per ``query_attention`` call every suffix is one request ``context + suffix`` (its query span
starts at ``len(context)``, passed as ``PoolingParams.extra_kwargs``); all of them are submitted
at once, so the real and the ``N/A`` query, and the requests of every query in flight, share
vLLM's batches.  Each suffix attends to the context and to itself only, as on the hf engine;
the price is that the context is encoded once per suffix (hf encodes it once and reuses its KV
cache).

Early exit: a model is built per window end (``num_hidden_layers`` = END), started on first
use, at most ``max_models`` of them; past that, a deeper model already running serves the
window (same scores, no early exit).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from rerankd.engines.vllm_icr import EXTRA_KEY_LAYERS, QUERY_START_KEY, TASK, icr_architecture

__all__ = ["AttentionModels"]

logger = logging.getLogger(__name__)

_GIB = 1 << 30


class AttentionModels:
    """The pooling engines of one ``vllm`` engine, by built depth (number of layers run).

    All coroutines run on the vllm engine's loop thread.
    """

    def __init__(
        self,
        *,
        path: str,
        hf_architectures: list[str] | None,
        full_layers: int,
        context_size: int,
        dtype: str,
        seed: int,
        on_cpu: bool,
        kv_cache_gib: float,
        gpu_memory_utilization: float,
        max_models: int,
        max_num_seqs: int | None = None,
        stat_logger: Any = None,
    ) -> None:
        if max_models < 1:
            raise ValueError(f"attention_max_models must be at least 1, got {max_models}")
        self.architecture = icr_architecture(hf_architectures)
        self.full_layers = int(full_layers)
        self.path = path
        self.context_size = int(context_size)
        self.dtype = dtype
        self.seed = seed
        self.on_cpu = on_cpu
        self.kv_cache_gib = kv_cache_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_models = max_models
        self.max_num_seqs = max_num_seqs
        self.stat_logger = stat_logger
        """A vLLM ``StatLoggerFactory`` for the pooling engines' scheduler figures (or ``None``)."""
        self.models: dict[int, Any] = {}
        self._lock: asyncio.Lock | None = None
        self.early_exit = True
        """Build a model per window end (``False``: windows run on the full-depth model)."""

    def engine_args(self, depth: int) -> dict[str, Any]:
        """``AsyncEngineArgs`` of the pooling engine that runs the first ``depth`` layers."""
        kwargs: dict[str, Any] = {
            "model": self.path,
            "tokenizer": self.path,
            "runner": "pooling",
            "hf_overrides": {
                "architectures": [self.architecture],
                "num_hidden_layers": depth,
                "rerankd_icr_full_layers": self.full_layers,
            },
            "dtype": self.dtype,
            "max_model_len": self.context_size,
            "enforce_eager": True,
            "enable_prefix_caching": False,
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(self.context_size, 8192),
            "seed": self.seed,
            "disable_log_stats": True,
        }
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.max_num_seqs
        if self.on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gib * _GIB)
        else:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kwargs

    def _start(self, depth: int) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        logger.info(
            "starting the ICR attention model (%s, %d of %d layers)", self.architecture, depth, self.full_layers
        )
        args = AsyncEngineArgs(**self.engine_args(depth))
        if self.stat_logger is None:
            llm = AsyncLLM.from_engine_args(args)
        else:
            llm = AsyncLLM.from_engine_args(args, stat_loggers=[self.stat_logger])
        self.models[depth] = llm
        return llm

    def depth_for(self, end: int) -> int:
        """The depth that serves a window ending at ``end`` (see the module docstring)."""
        if not self.early_exit or end >= self.full_layers:
            return self.full_layers
        if end in self.models or len(self.models) < self.max_models:
            return end
        deeper = sorted(d for d in self.models if d >= end)
        if deeper:
            logger.info(
                "attention_max_models=%d reached: layers ending at %d run %d layers", self.max_models, end, deeper[0]
            )
            return deeper[0]
        raise ValueError(
            f"a layer window ending at {end} needs another attention model, but attention_max_models="
            f"{self.max_models} are running ({sorted(self.models)} layers); raise attention_max_models"
        )

    async def model(self, depth: int) -> Any:
        """The pooling engine of ``depth`` layers, started on first use (blocks this loop meanwhile)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            llm = self.models.get(depth)
            return llm if llm is not None else self._start(depth)

    async def score(
        self, context_ids: list[int], suffix_ids: Sequence[list[int]], layers: tuple[int, int]
    ) -> list[list[float]]:
        """Per suffix: attention to each context token, summed over ``layers``' layers and the
        heads, averaged over the suffix tokens."""
        from vllm import PoolingParams

        from rerankd.engines.vllm import _tokens_prompt

        start, end = layers
        llm = await self.model(self.depth_for(end))

        async def one(suffix: list[int]) -> list[float]:
            params = PoolingParams(
                task=TASK, extra_kwargs={QUERY_START_KEY: len(context_ids), EXTRA_KEY_LAYERS: [start, end]}
            )
            final = None
            request_id = f"rerankd-icr-{uuid.uuid4().hex}"
            async for out in llm.encode(_tokens_prompt(context_ids + suffix), params, request_id):
                final = out
            if final is None:  # pragma: no cover - vLLM always yields a final output
                raise RuntimeError("vLLM returned no pooling output")
            data = final.outputs.data
            if data.numel() != len(context_ids):
                raise RuntimeError(f"ICR model returned {data.numel()} scores for {len(context_ids)} context tokens")
            return [float(x) for x in data.float().tolist()]

        return list(await asyncio.gather(*(one(s) for s in suffix_ids)))

    def shutdown(self) -> None:
        for llm in self.models.values():
            llm.shutdown()
        self.models.clear()
