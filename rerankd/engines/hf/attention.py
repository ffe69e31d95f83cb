"""Query-to-context attention rows for in-context reranking with Hugging Face causal LMs.

The contexts of a batch (one per ICR query) are left-padded into one batch and encoded with a
chunked, cached prefill (plain ``sdpa``, no attention weights materialised).  Each round of
suffixes (the k-th suffix of every query, right-padded) then runs over that KV cache, and
only *their* query rows are computed explicitly: ``softmax(q k^T * scale + mask)`` against
every cached key plus the suffix's own keys (causal inside the suffix).  Those rows are
summed over heads and over the layers of the window and averaged over the suffix's real
tokens as they are produced, so a layer needs ``O(batch x heads x suffix_len x total_len)``
memory and nothing of size ``total_len ** 2`` is ever built.  The cache is cropped back to
the contexts after each round.

Layer window: ``layers=(start, end)`` sums layers ``start <= l < end`` only.  When ``end`` is
below the model's layer count the forward passes stop after layer ``end - 1`` (early exit):
later layers never run and the context's KV cache holds only layers ``< end``.

The rows are taken inside a custom function registered with transformers'
``AttentionInterface``, which receives the query after RoPE (and any q/k norm) and the keys
of the whole sequence, so it works for every architecture that dispatches attention
through that interface (Llama, Mistral, Qwen2, Qwen3, ...).  Grouped-query attention is
handled by grouping query heads over their shared key head instead of repeating keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = [
    "ATTN_IMPLEMENTATION",
    "AttentionItem",
    "batched_context_query_attention",
    "check_layer_window",
    "context_query_attention",
    "num_layers",
]

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "rerankd_query_rows"
"""Name under which the row-recording attention is registered with transformers."""

AttentionItem = tuple[list[int], Sequence[list[int]]]
"""One ICR query of a batch: context token ids and the suffixes' token ids."""


@dataclass
class _RowRecorder:
    """Accumulates the attention each batch row's suffix pays to the padded context."""

    width: int
    """Padded context length: context keys are the first ``width`` cached positions."""
    q_lens: torch.Tensor  # long [batch]: real suffix tokens of each row
    start: int
    end: int
    total: torch.Tensor  # float32 [batch, width] summed over window layers and heads ([batch, layers, width] per layer)
    calls: int = 0
    recorded: int = 0


_RECORDER: ContextVar[_RowRecorder | None] = ContextVar("rerankd_row_recorder", default=None)


def _query_rows_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``sdpa`` attention, except for the window's layers while a recorder is active: then
    eager attention whose probabilities are also summed over heads, averaged over the real
    query rows and recorded."""
    recorder = _RECORDER.get()
    layer = -1
    if recorder is not None:
        layer = recorder.calls  # each layer calls attention once per forward pass, in order
        recorder.calls += 1
    if recorder is None or not recorder.start <= layer < recorder.end:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, n_heads, q_len, head_dim = query.shape
    n_kv_heads, k_len = key.shape[1], key.shape[2]
    groups = n_heads // n_kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling

    # Query heads h = kv * groups + g share key head kv (what repeat_kv does), so grouping
    # the queries avoids materialising repeated keys.
    q = query.float().reshape(batch, n_kv_heads, groups * q_len, head_dim)
    scores = torch.matmul(q, key.float().transpose(-1, -2)).mul_(scale)
    scores = scores.view(batch, n_heads, q_len, k_len)
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        # No mask means plain causality; the queries are the last q_len positions.
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril_(k_len - q_len)
        scores.masked_fill_(~allowed, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores.masked_fill_(~attention_mask[..., -k_len:], float("-inf"))
    else:
        scores = scores + attention_mask[..., -k_len:].float()
    probs = torch.softmax(scores, dim=-1)

    # Sum over heads, then average over each row's real suffix tokens (right padding excluded).
    q_lens = recorder.q_lens.to(probs.device)
    real = (torch.arange(q_len, device=probs.device)[None, :] < q_lens[:, None]).to(probs.dtype)
    row = (probs.sum(dim=1) * real[:, :, None]).sum(dim=1) / q_lens[:, None].to(probs.dtype)
    # Key j sits at padded position (width + q_len - k_len + j); only context keys count.
    offset = recorder.width + q_len - k_len
    if offset < 0:
        raise ValueError(f"{k_len} keys for {q_len} queries after {recorder.width} context positions")
    if recorder.total.dim() == 3:  # per layer
        recorder.total[:, layer - recorder.start, offset:] += row[:, : recorder.width - offset]
    else:
        recorder.total[:, offset:] += row[:, : recorder.width - offset]
    recorder.recorded += 1

    out = torch.matmul(probs.view(batch, n_kv_heads, groups * q_len, k_len).to(value.dtype), value)
    out = out.view(batch, n_heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, _query_rows_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)

# The attention implementation is switched on the (shared) model config for the duration
# of a call, so calls are serialised.
_SWITCH_LOCK = threading.Lock()


class _StopForward(Exception):
    """Raised by the hook on the window's last layer: the later layers are not needed."""


def _stop_forward(*_: Any) -> None:
    raise _StopForward


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body (no LM head: prefill needs no logits)."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, torch.nn.Module) else model


def num_layers(model: Any) -> int:
    """Decoder layers of ``model`` (its config's ``num_hidden_layers``)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    return int(getattr(text, "num_hidden_layers", 0) or 0)


def check_layer_window(layers: tuple[int, int] | None, n_layers: int) -> tuple[int, int]:
    """``layers`` as a validated ``(start, end)`` for a model of ``n_layers``; ``None``: all."""
    if layers is None:
        return 0, n_layers if n_layers > 0 else 1 << 30  # unknown depth: every layer
    start, end = int(layers[0]), int(layers[1])
    if not 0 <= start < end:
        raise ValueError(f"layers must be START:END with 0 <= START < END, got {start}:{end}")
    if n_layers and end > n_layers:
        raise ValueError(f"layers {start}:{end} ends past the model's {n_layers} layers (END <= {n_layers})")
    return start, end


def context_query_attention(
    model: Any,
    context_ids: list[int],
    suffix_ids: Sequence[list[int]],
    chunk_size: int = 2048,
    *,
    layers: tuple[int, int] | None = None,
    early_exit: bool = True,
) -> list[torch.Tensor]:
    """Attention from each suffix to each context token, as ICR scores it.

    Encodes ``context_ids`` once (chunks of ``chunk_size`` tokens into a KV cache), then for
    every suffix runs its tokens after the context (positions continue after it) and
    returns a float32 vector of ``len(context_ids)``: the attention probability paid to each
    context token, summed over the window's layers (``layers``; all by default) and heads and
    averaged over the suffix tokens.
    """
    return batched_context_query_attention(
        model, [(context_ids, suffix_ids)], chunk_size, layers=layers, early_exit=early_exit
    )[0]


@torch.inference_mode()
def batched_context_query_attention(
    model: Any,
    items: Sequence[AttentionItem],
    chunk_size: int = 2048,
    *,
    layers: tuple[int, int] | None = None,
    early_exit: bool = True,
    pad_id: int = 0,
    per_layer: bool = False,
) -> list[list[torch.Tensor]]:
    """:func:`context_query_attention` for several queries sharing forward passes: their
    contexts are prefilled as one left-padded batch, and their k-th suffixes run as one
    right-padded batch per k.  ``early_exit=False`` runs every layer (for tests);
    ``per_layer=True`` returns ``[end - start, len(context)]`` tensors, one row per layer of
    the window (for layer studies: any sub-window is a sum of rows)."""
    if not items:
        return []
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for context_ids, suffix_ids in items:
        if not context_ids:
            raise ValueError("context_ids is empty")
        if any(not s for s in suffix_ids):
            raise ValueError("every suffix needs at least one token")
    start, end = check_layer_window(layers, num_layers(model))
    if per_layer and end - start > 4096:
        raise ValueError("per_layer needs a layer window or a model whose config gives its layer count")
    decoder = _decoder(model)
    config = model.config
    device = next(model.parameters()).device
    blocks = getattr(decoder, "layers", None)
    with _SWITCH_LOCK:
        hook = None
        if early_exit and isinstance(blocks, torch.nn.ModuleList) and end < len(blocks):
            hook = blocks[end - 1].register_forward_hook(_stop_forward)
        previous = config._attn_implementation
        config._attn_implementation = ATTN_IMPLEMENTATION
        try:
            return _encode_and_score(decoder, device, items, chunk_size, start, end, pad_id, per_layer)
        finally:
            config._attn_implementation = previous
            if hook is not None:
                hook.remove()


def _forward(decoder: torch.nn.Module, **kwargs: Any) -> None:
    try:
        decoder(**kwargs, use_cache=True)
    except _StopForward:
        pass


def _encode_and_score(
    decoder: torch.nn.Module,
    device: torch.device,
    items: Sequence[AttentionItem],
    chunk_size: int,
    start: int,
    end: int,
    pad_id: int,
    per_layer: bool = False,
) -> list[list[torch.Tensor]]:
    """Chunked prefill of the padded contexts, then one recorded pass per suffix round."""
    batch = len(items)
    lengths = [len(c) for c, _ in items]
    width = max(lengths)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for b, (context_ids, _) in enumerate(items):
        ids[b, width - lengths[b] :] = torch.tensor(context_ids, dtype=torch.long)
        mask[b, width - lengths[b] :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # A DynamicCache without config keeps every layer whole (sliding-window layers too; their
    # window is applied by the mask), so crop() can always restore the context-only cache.
    cache = DynamicCache()
    for s in range(0, width, chunk_size):
        e = min(s + chunk_size, width)
        _forward(
            decoder,
            input_ids=ids[:, s:e],
            attention_mask=mask[:, :e],
            position_ids=positions[:, s:e],
            past_key_values=cache,
        )
    rounds = max(len(suffixes) for _, suffixes in items)
    results: list[list[torch.Tensor]] = [[] for _ in items]
    for k in range(rounds):
        # Queries with fewer suffixes get a one-token dummy whose result is dropped.
        suffixes = [list(s[k]) if k < len(s) else [pad_id] for _, s in items]
        q_lens = torch.tensor([len(s) for s in suffixes], dtype=torch.long)
        q_len = int(q_lens.max())
        suffix_ids = torch.full((batch, q_len), pad_id, dtype=torch.long)
        for b, row in enumerate(suffixes):
            suffix_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        suffix_mask = (torch.arange(q_len)[None, :] < q_lens[:, None]).long().to(device)
        suffix_positions = torch.tensor(lengths, dtype=torch.long)[:, None] + torch.arange(q_len)[None, :]
        shape = (batch, end - start, width) if per_layer else (batch, width)
        recorder = _RowRecorder(width, q_lens, start, end, torch.zeros(shape, dtype=torch.float32, device=device))
        token = _RECORDER.set(recorder)
        try:
            _forward(
                decoder,
                input_ids=suffix_ids.to(device),
                attention_mask=torch.cat([mask, suffix_mask], dim=1),
                position_ids=suffix_positions.to(device),
                past_key_values=cache,
            )
        finally:
            _RECORDER.reset(token)
            cache.crop(-q_len)
        if recorder.recorded == 0:
            raise RuntimeError(
                f"{type(decoder).__name__} does not dispatch attention through transformers' "
                "AttentionInterface, so its attention rows cannot be recorded"
            )
        logger.debug("suffix round %d of %d rows: %d layers recorded", k, batch, recorder.recorded)
        total = recorder.total.cpu()
        for b, (_, own) in enumerate(items):
            if k < len(own):
                results[b].append(total[b, ..., width - lengths[b] :].clone())
    return results
