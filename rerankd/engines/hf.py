"""The ``hf`` engine: transformers on CPU or GPU, the embedded default.

Calls from many concurrently running coroutines (one per query) are micro-batched: each
prompt becomes a job on a per-event-loop queue; a background task takes what is waiting (up
to ``max_batch_size`` jobs of the same kind), left-pads them into one batch and runs it on a
dedicated single worker thread, so the event loop never blocks on the model and the model is
never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from rerankd.engines.base import Capability
from rerankd.engines.provision import resolve_model
from rerankd.engines.registry import DEFAULT_MODEL, REGISTRY
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = ["BatchStats", "HFEngine", "HFTokenizer", "MicroBatcher"]

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>")
"""End-of-turn/end-of-text special tokens that stop generation when the tokenizer has them."""

# --------------------------------------------------------------------------- tokenizer


class HFTokenizer:
    """Adapter from a transformers tokenizer to :class:`rerankd.types.Tokenizer`."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` (no special tokens) and each token's ``[start, end)`` characters."""
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept, no clean-up of spaces)."""
        return str(self.hf.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to ``messages``, as text."""
        if not getattr(self.hf, "chat_template", None):
            raise ValueError(f"tokenizer {self.hf.name_or_path!r} has no chat template; use an instruct/chat model")
        out = self.hf.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(out)

    def render_for_generation(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt to generate from: continues a final assistant message, else adds the generation prompt."""
        if messages and messages[-1].role == "assistant":  # continue a prefilled answer
            out = self.hf.apply_chat_template(
                [m.model_dump() for m in messages], tokenize=False, continue_final_message=True
            )
            return str(out)
        return self.render_chat(messages, add_generation_prompt=True)

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the rendered chat prompt (with the generation prompt)."""
        return len(self.encode(self.render_chat(messages, add_generation_prompt=True)))

    @property
    def vocab_size(self) -> int:
        return len(self.hf)


# --------------------------------------------------------------------------- micro-batching


@dataclass
class BatchStats:
    """Counters of the batches an engine ran (for tests, metrics and benchmarks)."""

    batches: int = 0
    items: int = 0
    max_size: int = 0
    recent_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=256))

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.max_size = max(self.max_size, size)
        self.recent_sizes.append(size)


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future[Any]


RunBatch = Callable[[Hashable, list[Any]], list[Any]]
"""Runs one batch in the worker thread: one result (or exception instance) per payload."""


class MicroBatcher:
    """Gathers jobs submitted by concurrent coroutines into batches run on a worker thread.

    Jobs batch together only when their ``key`` is equal (e.g. same kind and ``max_tokens``).
    Bound to the event loop it was created in.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        executor: ThreadPoolExecutor,
        max_batch_size: int,
        stats: BatchStats | None = None,
        window_s: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.loop = asyncio.get_running_loop()
        self.stats = stats if stats is not None else BatchStats()
        self._run_batch = run_batch
        self._executor = executor
        self._max = max_batch_size
        self._window_s = window_s
        self._pending: deque[_Job] = deque()
        self._inflight: list[_Job] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._task = self.loop.create_task(self._worker(), name="rerankd-hf-batcher")

    async def submit_many(self, key: Hashable, payloads: Sequence[Any]) -> list[Any]:
        """Queue one job per payload and wait for all their results (same order)."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if not payloads:
            return []
        futures = []
        for payload in payloads:
            fut: asyncio.Future[Any] = self.loop.create_future()
            self._pending.append(_Job(key, payload, fut))
            futures.append(fut)
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    def _take(self) -> tuple[Hashable, list[_Job]]:
        while self._pending and self._pending[0].future.done():  # cancelled by their callers
            self._pending.popleft()
        if not self._pending:
            return None, []
        key = self._pending[0].key
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            if job.future.done():  # cancelled by its caller
                continue
            if job.key == key and len(batch) < self._max:
                batch.append(job)
            else:
                rest.append(job)
        self._pending = rest
        return key, batch

    async def _worker(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # let coroutines that are ready right now enqueue their jobs too
            await (asyncio.sleep(self._window_s) if self._window_s > 0 else asyncio.sleep(0))
            key, jobs = self._take()
            if not jobs:
                continue
            self._inflight = jobs
            self.stats.record(len(jobs))
            try:
                results = await self.loop.run_in_executor(
                    self._executor, self._run_batch, key, [j.payload for j in jobs]
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.exception("batch of %d failed", len(jobs))
                results = [e] * len(jobs)
            finally:
                self._inflight = []
            for job, res in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)

    async def aclose(self) -> None:
        """Stop the worker task and fail every job still waiting."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for job in [*self._inflight, *self._pending]:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the engine was closed"))
        self._pending.clear()


# --------------------------------------------------------------------------- engine


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


class HFEngine:
    """transformers backend: greedy generation, next-token logprobs and attention (ICR).

    Build it with :meth:`load`.  All coroutine methods may be called concurrently; prompts
    of concurrent calls share batches.
    """

    name = "hf"
    capabilities: frozenset[Capability] = frozenset({Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION})

    def __init__(
        self,
        hf_model: Any,
        tokenizer: Any,
        *,
        model: str,
        context_size: int,
        max_batch_size: int = 8,
        batch_window_s: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        tokenizer.padding_side = "left"
        self.hf_model = hf_model.eval()
        self.hf_tokenizer = HFTokenizer(tokenizer)
        self.tokenizer: Tokenizer = self.hf_tokenizer
        self.model = model
        self.context_size = int(context_size)
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.stats = BatchStats()
        self.device: torch.device = next(hf_model.parameters()).device
        self._eos_ids = self._stop_ids(hf_model, tokenizer)
        pad = tokenizer.pad_token_id
        self._pad_id: int = int(pad) if pad is not None else min(self._eos_ids, default=0)
        self._vocab_size = int(hf_model.get_output_embeddings().weight.shape[0])
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerankd-hf")
        self._batchers: dict[asyncio.AbstractEventLoop, MicroBatcher] = {}
        self._closed = False
        self._head32: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: str = "cpu",
        dtype: str | torch.dtype = "bfloat16",
        context_size: int | None = None,
        max_batch_size: int = 8,
        *,
        attn_implementation: str | None = None,
        batch_window_s: float = 0.0,
    ) -> HFEngine:
        """Load a bundled model name (pulled on first use), a local HF folder or a hub id."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        config = AutoConfig.from_pretrained(path)
        native = getattr(config, "max_position_embeddings", None)
        spec = REGISTRY.get(model) or REGISTRY.get(model.lower())
        default_ctx = spec.context_size if spec is not None else native
        if context_size is None:
            if default_ctx is None:
                raise ValueError(f"cannot tell the context size of {model!r}; pass context_size=")
            context_size = int(default_ctx)
        elif native is not None and context_size > native:
            logger.warning("context_size %d exceeds %s's max_position_embeddings %d", context_size, model, native)
        torch_device = _resolve_device(device)
        kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype)}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model: Any = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        hf_model = hf_model.to(torch_device)
        logger.info("loaded %s from %s on %s (%s)", model, path, torch_device, kwargs["dtype"])
        return cls(
            hf_model,
            tokenizer,
            model=model,
            context_size=context_size,
            max_batch_size=max_batch_size,
            batch_window_s=batch_window_s,
        )

    @staticmethod
    def _stop_ids(hf_model: Any, tokenizer: Any) -> set[int]:
        """The model's eos ids, the tokenizer's eos and any known end-of-turn special token."""
        added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
        ids: set[int] = {int(added[t]) for t in _END_TOKENS if t in added}
        gen = getattr(hf_model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(i) for i in eos)
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        return ids

    # ----------------------------------------------------------------- batching

    def _batcher(self) -> MicroBatcher:
        if self._closed:
            raise RuntimeError("the engine is closed")
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            for old in [lp for lp in self._batchers if lp.is_closed()]:
                del self._batchers[old]
            batcher = MicroBatcher(
                self._run_batch, self._executor, self.max_batch_size, self.stats, self.batch_window_s
            )
            self._batchers[loop] = batcher
        return batcher

    def _run_batch(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        kind = key[0] if isinstance(key, tuple) else key
        with torch.inference_mode():
            if kind == "generate":
                assert isinstance(key, tuple)
                return self._generate_batch(payloads, int(key[1]))
            if kind == "logprobs":
                return self._logprobs_batch(payloads)
        raise ValueError(f"unknown batch kind {key!r}")

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _generate_batch(self, prompts: list[list[int]], max_tokens: int) -> list[Generation]:
        from transformers import GenerationConfig

        ids, mask = self._left_pad(prompts)
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=sorted(self._eos_ids) or None,
            pad_token_id=self._pad_id,
        )
        out = self.hf_model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        rows = out[:, ids.shape[1] :].tolist()
        results = []
        for prompt, row in zip(prompts, rows, strict=True):
            stop = next((k for k, t in enumerate(row) if t in self._eos_ids), None)
            content = row if stop is None else row[:stop]
            count = len(row) if stop is None else stop + 1
            text = self.hf_tokenizer.hf.decode(content, skip_special_tokens=True)
            results.append(Generation(text=text, prompt_tokens=len(prompt), completion_tokens=count))
        return results

    def _lm_head_fp32(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output layer in float32, cached: bf16 logits tie often enough to scramble
        FIRST's identifier order (seen on Qwen2.5), so the last projection runs in fp32."""
        if self._head32 is None:
            head = self.hf_model.get_output_embeddings()
            bias = getattr(head, "bias", None)
            self._head32 = (head.weight.detach().float(), None if bias is None else bias.detach().float())
        return self._head32

    def _logprobs_batch(self, payloads: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        ids, mask = self._left_pad([p for p, _ in payloads])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if getattr(self.hf_model.config, "final_logit_softcapping", None):
            # Models that transform logits after the projection: use their own head.
            out = self.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            logits = out.logits[:, -1, :].float()
        else:
            base = self.hf_model.base_model
            hidden = base(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state[:, -1, :]
            weight, bias = self._lm_head_fp32()
            logits = hidden.float() @ weight.T
            if bias is not None:
                logits = logits + bias
        logp = torch.log_softmax(logits, dim=-1)
        return [logp[i, torch.tensor(t, dtype=torch.long)].tolist() for i, (_, t) in enumerate(payloads)]

    # ----------------------------------------------------------------- Engine protocol

    def _render_for_generation(self, messages: Sequence[ChatMessage]) -> str:
        return self.hf_tokenizer.render_for_generation(messages)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        """Greedy completions of chat prompts (one per prompt, same order).

        A prompt whose last message is from the assistant is continued rather than answered.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        batcher = self._batcher()
        encoded = [self.tokenizer.encode(self._render_for_generation(p)) for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            room = self.context_size - len(ids)
            if not ids or room < 1:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; the context size of {self.model} is "
                    f"{self.context_size} (truncate the passages)"
                )
            groups.setdefault(min(max_tokens, room), []).append(i)
        results: list[Generation | None] = [None] * len(encoded)
        outs = await asyncio.gather(
            *(batcher.submit_many(("generate", n), [encoded[i] for i in idx]) for n, idx in groups.items())
        )
        for idx, gens in zip(groups.values(), outs, strict=True):
            for i, g in zip(idx, gens, strict=True):
                results[i] = g
        return [g for g in results if g is not None]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of ``token_ids`` as the next token after each raw prompt."""
        wanted = [int(t) for t in token_ids]
        bad = [t for t in wanted if not 0 <= t < self._vocab_size]
        if bad:
            raise ValueError(f"token ids {bad} are outside the vocabulary (size {self._vocab_size})")
        batcher = self._batcher()
        payloads = []
        for i, text in enumerate(prompts):
            ids = self.tokenizer.encode(text)
            if not ids or len(ids) > self.context_size:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; the context size of {self.model} is {self.context_size}"
                )
            payloads.append((ids, wanted))
        return await batcher.submit_many(("logprobs",), payloads)

    async def query_attention(self, context: str, suffixes: Sequence[str]) -> ContextAttention:
        """Attention from each suffix's tokens to every token of ``context`` (see hf_attention)."""
        from rerankd.engines.hf_attention import context_query_attention

        if self._closed:
            raise RuntimeError("the engine is closed")
        context_ids, offsets = self.hf_tokenizer.encode_with_offsets(context)
        suffix_ids = [self.tokenizer.encode(s) for s in suffixes]
        longest = max((len(s) for s in suffix_ids), default=0)
        if not context_ids or len(context_ids) + longest > self.context_size:
            raise ValueError(
                f"context of {len(context_ids)} tokens + suffix of {longest} tokens does not fit the "
                f"context size {self.context_size} of {self.model}"
            )

        def run() -> list[list[float]]:
            with torch.inference_mode():
                vectors = context_query_attention(self.hf_model, context_ids, suffix_ids)
            return [v.float().cpu().tolist() for v in vectors]

        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, run)
        return ContextAttention(
            token_offsets=offsets,
            scores=scores,
            prompt_tokens=len(context_ids) + sum(len(s) for s in suffix_ids),
        )

    async def aclose(self) -> None:
        """Stop the batchers and the worker thread (waiting for a batch in progress)."""
        if self._closed:
            return
        self._closed = True
        for loop, batcher in list(self._batchers.items()):
            if loop is asyncio.get_running_loop():
                await batcher.aclose()
        self._batchers.clear()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
