"""Query-to-context attention rows for in-context reranking with Hugging Face causal LMs.

The context is encoded once with a chunked, cached prefill (plain ``sdpa``, no attention
weights materialised).  Each suffix then runs over a cropped view of that KV cache, and
only *its* query rows are computed explicitly: ``softmax(q k^T * scale + mask)`` against
every cached key plus the suffix's own keys (causal inside the suffix).  Those rows are
summed over heads and layers and averaged over the suffix tokens as they are produced, so
a layer needs ``O(heads x suffix_len x total_len)`` memory and nothing of size
``total_len ** 2`` is ever built.

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

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "rerankd_query_rows"
"""Name under which the row-recording attention is registered with transformers."""


@dataclass
class _RowRecorder:
    """Accumulates the attention one suffix pays to the ``n_context`` context tokens."""

    n_context: int
    total: torch.Tensor  # float32 [n_context], summed over layers and heads
    layers: int = 0


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
    """``sdpa`` attention, except while a recorder is active: then eager attention whose
    probabilities are also summed over heads, averaged over queries and recorded."""
    recorder = _RECORDER.get()
    if recorder is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, n_heads, q_len, head_dim = query.shape
    if batch != 1:
        raise ValueError(f"query-row recording supports batch size 1, got {batch}")
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

    # Key j sits at absolute position (n_context + q_len - k_len + j); only context keys count.
    row = probs[0].sum(dim=0).mean(dim=0)
    offset = recorder.n_context + q_len - k_len
    if offset < 0:
        raise ValueError(f"{k_len} keys for {q_len} queries after {recorder.n_context} context tokens")
    recorder.total[offset:] += row[: recorder.n_context - offset]
    recorder.layers += 1

    out = torch.matmul(probs.view(batch, n_kv_heads, groups * q_len, k_len).to(value.dtype), value)
    out = out.view(batch, n_heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, _query_rows_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)

# The attention implementation is switched on the (shared) model config for the duration
# of a call, so calls are serialised.
_SWITCH_LOCK = threading.Lock()


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body (no LM head: prefill needs no logits)."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, torch.nn.Module) else model


@torch.inference_mode()
def context_query_attention(
    model: Any,
    context_ids: list[int],
    suffix_ids: Sequence[list[int]],
    chunk_size: int = 2048,
) -> list[torch.Tensor]:
    """Attention from each suffix to each context token, as ICR scores it.

    Encodes ``context_ids`` once (chunks of ``chunk_size`` tokens into a KV cache), then for
    every suffix runs its tokens after the context (positions continue after it) and
    returns a float32 vector of ``len(context_ids)``: the attention probability paid to each
    context token, summed over layers and heads and averaged over the suffix tokens.
    """
    if not context_ids:
        raise ValueError("context_ids is empty")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if any(not s for s in suffix_ids):
        raise ValueError("every suffix needs at least one token")
    decoder = _decoder(model)
    config = model.config
    device = next(model.parameters()).device
    with _SWITCH_LOCK:
        previous = config._attn_implementation
        config._attn_implementation = ATTN_IMPLEMENTATION
        try:
            return _encode_and_score(decoder, device, context_ids, suffix_ids, chunk_size)
        finally:
            config._attn_implementation = previous


def _encode_and_score(
    decoder: torch.nn.Module,
    device: torch.device,
    context_ids: list[int],
    suffix_ids: Sequence[list[int]],
    chunk_size: int,
) -> list[torch.Tensor]:
    """Chunked prefill of the context, then one recorded pass per suffix on the cropped cache."""
    n_context = len(context_ids)
    # A DynamicCache without config keeps every layer whole (sliding-window layers too; their
    # window is applied by the mask), so crop() can always restore the context-only cache.
    # Cropping is cheaper than deep-copying the cache per suffix: each suffix pass then
    # copies the layer's keys/values once (torch.cat), where a deep copy would add another.
    cache = DynamicCache()
    ids = torch.tensor([context_ids], dtype=torch.long, device=device)
    for start in range(0, n_context, chunk_size):
        decoder(input_ids=ids[:, start : start + chunk_size], past_key_values=cache, use_cache=True)
    results: list[torch.Tensor] = []
    for suffix in suffix_ids:
        recorder = _RowRecorder(n_context, torch.zeros(n_context, dtype=torch.float32, device=device))
        token = _RECORDER.set(recorder)
        try:
            decoder(
                input_ids=torch.tensor([suffix], dtype=torch.long, device=device),
                past_key_values=cache,
                use_cache=True,
            )
        finally:
            _RECORDER.reset(token)
            cache.crop(-len(suffix))
        if recorder.layers == 0:
            raise RuntimeError(
                f"{type(decoder).__name__} does not dispatch attention through transformers' "
                "AttentionInterface, so its attention rows cannot be recorded"
            )
        logger.debug("suffix of %d tokens: attention recorded over %d layers", len(suffix), recorder.layers)
        results.append(recorder.total.cpu())
    return results
