"""Query rows of causal attention, in plain torch (no vLLM): what the ICR pooling model records.

Only the rows of the last ``n_rows`` queries of one sequence are built: ``heads x n_rows x
seq_len`` scores per layer, never ``seq_len ** 2``.  Grouped-query attention is handled by
grouping the query heads over their shared key head (no repeated keys).
"""

from __future__ import annotations

import torch


def suffix_attention_to_keys(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention paid by the last queries of one sequence to each of its keys.

    ``query``: ``[n_rows, n_heads, head_dim]``, the last ``n_rows`` tokens of the sequence
    (after rotary embedding); ``key``: ``[seq_len, n_kv_heads, head_dim]``, all its tokens.
    Query row ``i`` sits at position ``seq_len - n_rows + i`` and sees keys up to itself
    (causal).  Returns float32 ``[seq_len]``: softmax probabilities summed over heads and rows.
    """
    n_rows, n_heads, head_dim = query.shape
    seq_len, n_kv_heads, _ = key.shape
    if n_rows > seq_len or n_rows < 1:
        raise ValueError(f"{n_rows} query rows for a sequence of {seq_len} tokens")
    if n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads do not group over {n_kv_heads} key heads")
    groups = n_heads // n_kv_heads
    # head h = kv * groups + g uses key head kv (as repeat_kv); rows ordered (kv, g, i)
    q = query.float().permute(1, 0, 2).reshape(n_kv_heads, groups * n_rows, head_dim)
    k = key.float().permute(1, 2, 0)  # [n_kv_heads, head_dim, seq_len]
    scores = torch.matmul(q, k).mul_(scale).view(n_kv_heads, groups, n_rows, seq_len)
    allowed = torch.ones(n_rows, seq_len, dtype=torch.bool, device=scores.device).tril_(seq_len - n_rows)
    scores.masked_fill_(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs.sum(dim=(0, 1, 2))
