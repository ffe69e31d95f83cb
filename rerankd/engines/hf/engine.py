"""The ``hf`` engine: transformers on CPU or GPU, the embedded default.

Calls from many concurrently running coroutines (one per query) are micro-batched
(:mod:`rerankd.engines.hf.micro_batcher`): each prompt, or each ICR query, becomes a job on a
per-event-loop queue; a background task takes what is waiting (up to ``max_batch_size`` jobs
of the same kind: same ``max_tokens``, same ICR layer window), pads them into one batch and
runs it on a dedicated single worker thread, so the event loop never blocks on the model and
the model is never used by two threads at once.  ICR batches prefill their contexts together
and then their query suffixes (:func:`rerankd.engines.hf.attention.batched_context_query_attention`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from rerankd.engines.base import Capability
from rerankd.engines.budget import check_max_tokens, check_prompt_fits, output_budget
from rerankd.engines.hf.attention import batched_context_query_attention, check_layer_window, num_layers
from rerankd.engines.hf.device import resolve_device, resolve_dtype
from rerankd.engines.hf.micro_batcher import BatchStats, MicroBatcher
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.models.provision import resolve_model
from rerankd.models.registry import DEFAULT_MODEL, REGISTRY
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = ["BatchStats", "HFEngine", "HFTokenizer", "MicroBatcher"]

logger = logging.getLogger(__name__)


_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>")
"""End-of-turn/end-of-text special tokens that stop generation when the tokenizer has them."""

# --------------------------------------------------------------------------- engine


def _prefix_rows(prompts: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The rows to run for next-token logprobs of ``prompts``: a prompt that is a prefix of
    another one (FIRST asks for ``P`` and ``P + "["`` together) is read from that prompt's row
    (causal attention: its hidden state there is the same).  Returns the rows and, per prompt,
    ``(row, tokens after the prompt's end in that row)``."""
    rows: list[list[int]] = []
    where: list[tuple[int, int]] = [(0, 0)] * len(prompts)
    for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i])):
        p = list(prompts[i])
        host = next((r for r, row in enumerate(rows) if row[: len(p)] == p), None)
        if host is None:
            rows.append(p)
            host = len(rows) - 1
        where[i] = (host, len(rows[host]) - len(p))
    return rows, where


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
        self.num_layers = num_layers(hf_model)
        """Decoder layers: ICR's ``layers`` window must end at or below it."""
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
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        context_size: int | None = None,
        max_batch_size: int = 8,
        *,
        attn_implementation: str | None = None,
        batch_window_s: float = 0.0,
    ) -> HFEngine:
        """Load a bundled model name (pulled on first use), a local HF folder or a hub id.

        ``device``: ``auto`` (CUDA when present, logged), ``cpu``, ``cuda`` or ``cuda:N``;
        ``dtype``: ``auto`` (bfloat16; float16 on GPUs without it, float32 on CPUs without native
        bfloat16), ``float32``, ``bfloat16`` or ``float16``; ``max_batch_size``: prompts (or ICR
        queries) per forward pass.
        """
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
        torch_device = resolve_device(device)
        kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, torch_device)}
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
            if kind == "attention":
                assert isinstance(key, tuple)
                return self._attention_batch(payloads, key[1])
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
        rows, where = _prefix_rows([p for p, _ in payloads])
        ids, mask = self._left_pad(rows)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Row and position of each prompt's last token (left padding: rows end at the last column).
        pick_row = torch.tensor([r for r, _ in where], dtype=torch.long, device=ids.device)
        pick_pos = torch.tensor([ids.shape[1] - 1 - back for _, back in where], dtype=torch.long, device=ids.device)
        if getattr(self.hf_model.config, "final_logit_softcapping", None):
            # Models that transform logits after the projection: use their own head.
            out = self.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            logits = out.logits[pick_row, pick_pos, :].float()
        else:
            base = self.hf_model.base_model
            hidden = base(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
            ).last_hidden_state[pick_row, pick_pos, :]
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
        check_max_tokens(max_tokens)
        batcher = self._batcher()
        encoded = [self.tokenizer.encode(self._render_for_generation(p)) for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            budget = output_budget(i, len(ids), max_tokens, self.context_size, self.model)
            groups.setdefault(budget, []).append(i)
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
            check_prompt_fits(i, len(ids), self.context_size, self.model)
            payloads.append((ids, wanted))
        return await batcher.submit_many(("logprobs",), payloads)

    def _attention_batch(
        self, payloads: list[tuple[list[int], list[list[int]]]], layers: tuple[int, int] | None
    ) -> list[list[list[float]]]:
        vectors = batched_context_query_attention(self.hf_model, payloads, layers=layers, pad_id=self._pad_id)
        return [[v.tolist() for v in row] for row in vectors]

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        """Attention from each suffix's tokens to every token of ``context`` (see :mod:`.attention`),
        summed over the layers of ``layers`` (all by default; the pass stops at its last layer).

        Concurrent calls with the same ``layers`` share forward passes (up to ``max_batch_size``
        queries: their contexts are prefilled as one padded batch, then their suffixes).
        """
        if layers is not None:
            try:
                layers = check_layer_window(layers, self.num_layers)
            except ValueError as e:
                raise ValueError(f"{e} of {self.model}") from None
        batcher = self._batcher()
        context_ids, offsets = self.hf_tokenizer.encode_with_offsets(context)
        suffix_ids = [self.tokenizer.encode(s) for s in suffixes]
        longest = max((len(s) for s in suffix_ids), default=0)
        if not context_ids or len(context_ids) + longest > self.context_size:
            raise ValueError(
                f"context of {len(context_ids)} tokens + suffix of {longest} tokens does not fit the "
                f"context size {self.context_size} of {self.model}"
            )
        [scores] = await batcher.submit_many(("attention", layers), [(context_ids, suffix_ids)])
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
