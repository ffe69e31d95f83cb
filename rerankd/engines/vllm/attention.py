"""ICR attention on the ``vllm`` engine: pooling ``AsyncLLM``\\ s running our plugin's model.

vLLM runs one runner type per engine (``generate`` or ``pooling``), so ICR gets its own
``AsyncLLM`` next to the generation one, on the same event loop thread, with the ICR
architecture of :mod:`rerankd.engines.vllm.icr` (``hf_overrides``), eager mode and whole
prompts per step (no chunked prefill, no prefix caching: every key of a prompt must be in the
forward pass that records its query rows).

Per ``query_attention`` call every suffix is one request ``context + suffix`` (its query span
starts at ``len(context)``, passed as ``PoolingParams.extra_kwargs``); all of them are submitted
at once, so the real and the ``N/A`` query, and the requests of every query in flight, share
vLLM's batches.  Each suffix attends to the context and to itself only, as on the hf engine;
the price is that the context is encoded once per suffix (hf encodes it once and reuses its KV
cache).

Early exit: a model is built per window end (``num_hidden_layers`` = END), started on first
use; at most ``max_models`` models run, the full-depth one included, and one of them is kept
for the full depth while it has not started.  Past that, a deeper model already running serves
the window (same scores, no early exit).  Which depth serves a window that would start a model
is decided under a lock, so concurrent windows never start more than ``max_models``.  An engine
starts in a thread of its own (requests to the engines already running go on meanwhile); one
that failed to start is not tried again (its error is raised again, until the worker restarts).

Every argument of the generation engine reaches the attention engines
(:func:`rerankd.engines.vllm.args.attention_engine_args`).  Requests are checked against the
model's conditions before they are submitted (:func:`rerankd.engines.vllm.icr.check_icr_request`),
so that a bad prompt fails alone instead of failing the engine core and every request in flight.

Scoring engines (``attention="only"``): the full-depth model also has the LM head and serves
next-token log-probabilities (:meth:`AttentionModels.logprobs`), so FIRST runs without a
decoding engine.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rerankd.engines.vllm.args import attention_engine_args
from rerankd.engines.vllm.icr import (
    EXTRA_KEY_LAYERS,
    LM_HEAD_KEY,
    LOGPROB_IDS_KEY,
    QUERY_START_KEY,
    TASK,
    check_icr_request,
    check_logprob_request,
    icr_architecture,
)

__all__ = ["AttentionModels"]

logger = logging.getLogger(__name__)

Starter = Callable[[dict[str, Any]], Any]
"""Starts one vLLM engine from its ``AsyncEngineArgs`` keywords (blocking; run in a thread)."""


class AttentionModels:
    """The pooling engines of one ``vllm`` engine, by built depth (number of layers run).

    All coroutines run on the vllm engine's loop thread.
    """

    def __init__(
        self,
        *,
        generation_args: Mapping[str, Any],
        hf_architectures: list[str] | None,
        full_layers: int,
        context_size: int,
        vocab_size: int,
        on_cpu: bool,
        kv_cache_gib: float,
        gpu_memory_utilization: float,
        max_models: int,
        lm_head: bool = False,
        stat_logger: Any = None,
        starter: Starter | None = None,
    ) -> None:
        if max_models < 1:
            raise ValueError(f"attention_max_models must be at least 1, got {max_models}")
        if int(generation_args.get("pipeline_parallel_size") or 1) > 1:
            raise ValueError("ICR on the vllm engine does not support pipeline parallelism (pipeline_parallel_size)")
        self.architecture = icr_architecture(hf_architectures)
        self.generation_args = dict(generation_args)
        self.full_layers = int(full_layers)
        self.context_size = int(context_size)
        self.vocab_size = int(vocab_size)
        self.on_cpu = on_cpu
        self.kv_cache_gib = kv_cache_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_models = max_models
        self.lm_head = lm_head
        """The full-depth model has the LM head: :meth:`logprobs` (scoring engines)."""
        self.stat_logger = stat_logger
        """A vLLM ``StatLoggerFactory`` for the pooling engines' scheduler figures (or ``None``)."""
        self._starter = starter or self._start_async_llm
        self.models: dict[int, Any] = {}
        self.failed: dict[int, BaseException] = {}
        self._lock: asyncio.Lock | None = None
        self.early_exit = True
        """Build a model per window end (``False``: windows run on the full-depth model)."""

    @property
    def max_batched_tokens(self) -> int:
        return int(self.engine_args(self.full_layers)["max_num_batched_tokens"])

    def engine_args(self, depth: int) -> dict[str, Any]:
        """``AsyncEngineArgs`` of the pooling engine that runs the first ``depth`` layers."""
        return attention_engine_args(
            self.generation_args,
            depth=depth,
            full_layers=self.full_layers,
            architecture=self.architecture,
            max_model_len=self.context_size,
            icr_overrides={LM_HEAD_KEY: True} if self.lm_head and depth == self.full_layers else None,
            on_cpu=self.on_cpu,
            kv_cache_gib=self.kv_cache_gib,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def _start_async_llm(self, kwargs: dict[str, Any]) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**kwargs)
        if self.stat_logger is None:
            return AsyncLLM.from_engine_args(args)
        return AsyncLLM.from_engine_args(args, stat_loggers=[self.stat_logger])

    def depth_for(self, end: int) -> int:
        """The depth that serves a window ending at ``end`` now (see the module docstring)."""
        full = self.full_layers
        if not self.early_exit or end >= full:
            return full
        if end in self.models:
            return end
        kept_for_full = 0 if full in self.models else 1
        if len(self.models) + kept_for_full < self.max_models:
            return end
        deeper = min((d for d in self.models if d >= end), default=full)
        logger.info("attention_max_models=%d reached: layers ending at %d run %d layers", self.max_models, end, deeper)
        return deeper

    async def model_for(self, end: int) -> tuple[int, Any]:
        """The depth serving a window ending at ``end`` and its engine, started if needed."""
        depth = self.depth_for(end)
        llm = self.models.get(depth)
        if llm is not None:  # nothing to start: no lock needed
            return depth, llm
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            depth = self.depth_for(end)  # again: another window may have started one meanwhile
            llm = self.models.get(depth)
            if llm is None:
                llm = await self._start(depth)
            return depth, llm

    async def _start(self, depth: int) -> Any:
        earlier = self.failed.get(depth)
        if earlier is not None:
            raise RuntimeError(
                f"the ICR attention engine of {depth} layers failed to start earlier ({earlier}); "
                "restart the worker to try again"
            )
        logger.info(
            "starting the ICR attention model (%s, %d of %d layers)", self.architecture, depth, self.full_layers
        )
        try:
            llm = await asyncio.to_thread(self._starter, self.engine_args(depth))
        except Exception as e:
            self.failed[depth] = e
            raise
        self.models[depth] = llm
        return llm

    async def _encode(self, llm: Any, ids: list[int], extra: dict[str, Any], kind: str) -> Any:
        from vllm import PoolingParams

        from rerankd.engines.vllm.compat import tokens_prompt

        params = PoolingParams(task=TASK, extra_kwargs=extra)
        final = None
        async for out in llm.encode(tokens_prompt(ids), params, f"rerankd-{kind}-{uuid.uuid4().hex}"):
            final = out
        if final is None:  # pragma: no cover - vLLM always yields a final output
            raise RuntimeError("vLLM returned no pooling output")
        return final.outputs.data

    async def score(
        self, context_ids: list[int], suffix_ids: Sequence[list[int]], layers: tuple[int, int]
    ) -> list[list[float]]:
        """Per suffix: attention to each context token, summed over ``layers``' layers and the
        heads, averaged over the suffix tokens."""
        start, end = layers
        for suffix in suffix_ids:  # before anything starts or is submitted
            check_icr_request(
                len(context_ids), len(suffix), layers, self.full_layers, self.context_size, self.max_batched_tokens
            )
        depth, llm = await self.model_for(end)

        async def one(suffix: list[int]) -> list[float]:
            extra = {QUERY_START_KEY: len(context_ids), EXTRA_KEY_LAYERS: [start, end]}
            data = await self._encode(llm, context_ids + suffix, extra, "icr")
            if data.numel() != len(context_ids):
                raise RuntimeError(f"ICR model returned {data.numel()} scores for {len(context_ids)} context tokens")
            return [float(x) for x in data.float().tolist()]

        if depth < end:  # pragma: no cover - depth_for never picks a shallower model
            raise RuntimeError(f"layers ending at {end} were given a model of {depth} layers")
        return list(await asyncio.gather(*(one(s) for s in suffix_ids)))

    async def logprobs(self, prompts: Sequence[list[int]], token_ids: Sequence[int]) -> list[list[float]]:
        """Per prompt: log-probabilities of ``token_ids`` as the next token (the full-depth model's
        LM head, float32 log-softmax of the logits as vLLM's sampler)."""
        if not self.lm_head:
            raise RuntimeError("this ICR attention engine was built without the LM head (attention='only' has it)")
        wanted = [int(t) for t in token_ids]
        for ids in prompts:
            check_logprob_request(len(ids), wanted, self.vocab_size, self.context_size, self.max_batched_tokens)
        _, llm = await self.model_for(self.full_layers)

        async def one(ids: list[int]) -> list[float]:
            data = await self._encode(llm, ids, {LOGPROB_IDS_KEY: wanted}, "logprobs")
            if data.numel() != len(wanted):
                raise RuntimeError(f"the scoring model returned {data.numel()} logprobs for {len(wanted)} token ids")
            return [float(x) for x in data.float().tolist()]

        return list(await asyncio.gather(*(one(ids) for ids in prompts)))

    def shutdown(self) -> None:
        for llm in self.models.values():
            llm.shutdown()
        self.models.clear()
