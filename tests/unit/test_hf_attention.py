"""context_query_attention against the eager attention of the full prompt, on tiny random models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rerankd.engines.hf_attention import context_query_attention

SHAPE: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=500,
    max_position_embeddings=512,
)


def _llama() -> Any:
    return LlamaForCausalLM(LlamaConfig(**SHAPE))


def _qwen2() -> Any:
    return Qwen2ForCausalLM(Qwen2Config(**SHAPE))


def _qwen2_sliding() -> Any:
    # Layer 1 attends to a 24-token window only: the window must come from the mask.
    config = Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=24, max_window_layers=1)
    assert config.layer_types == ["full_attention", "sliding_attention"]
    return Qwen2ForCausalLM(config)


def _model(factory: Callable[[], Any]) -> Any:
    torch.manual_seed(0)
    model = factory().to(torch.float32).eval()
    model.set_attn_implementation("sdpa")
    return model


def _reference(model: Any, context: list[int], suffix: list[int]) -> torch.Tensor:
    """Eager attention of the whole prompt: suffix rows, summed over layers and heads,
    averaged over suffix tokens, context columns."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([context + suffix]), output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    n = len(context)
    rows = torch.stack([a[0, :, n:, :] for a in out.attentions])  # [layers, heads, suffix, total]
    return rows.sum(dim=(0, 1)).mean(dim=0)[:n]


@pytest.mark.parametrize("factory", [_llama, _qwen2, _qwen2_sliding], ids=["llama", "qwen2", "qwen2_sliding"])
@pytest.mark.parametrize("chunk_size", [2048, 16], ids=["one_chunk", "chunked"])
def test_matches_eager_full_prompt(factory: Callable[[], Any], chunk_size: int) -> None:
    model = _model(factory)
    gen = torch.Generator().manual_seed(1)
    context = torch.randint(0, 500, (70,), generator=gen).tolist()
    suffixes = [torch.randint(0, 500, (9,), generator=gen).tolist(), [7, 8, 9]]

    got = context_query_attention(model, context, suffixes, chunk_size=chunk_size)

    assert len(got) == 2
    for suffix, vec in zip(suffixes, got, strict=True):
        want = _reference(model, context, suffix)
        assert vec.dtype == torch.float32 and vec.shape == (len(context),)
        torch.testing.assert_close(vec, want, atol=1e-5, rtol=1e-5)
    # The suffixes differ, so must their rows: the cache was cropped back between them.
    assert not torch.allclose(got[0], got[1])
    assert model.config._attn_implementation == "sdpa"


def test_single_token_suffix_and_sums() -> None:
    model = _model(_llama)
    context = list(range(1, 41))
    (vec,) = context_query_attention(model, context, [[5]], chunk_size=7)
    torch.testing.assert_close(vec, _reference(model, context, [5]), atol=1e-5, rtol=1e-5)
    # Each (layer, head) row sums to 1 over context + suffix, so context mass <= layers * heads.
    assert 0 < float(vec.sum()) <= 2 * 4 + 1e-4


def test_rejects_empty_inputs() -> None:
    model = _model(_llama)
    with pytest.raises(ValueError):
        context_query_attention(model, [], [[1]])
    with pytest.raises(ValueError):
        context_query_attention(model, [1, 2], [[]])


def test_refuses_models_that_bypass_the_attention_interface() -> None:
    class Opaque(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = LlamaConfig(**SHAPE)
            self.proj = torch.nn.Linear(2, 2)

        def forward(self, **kwargs: Any) -> None:
            return None

    model = Opaque()
    with pytest.raises(RuntimeError, match="AttentionInterface"):
        context_query_attention(model, [1, 2, 3], [[4]])
    assert model.config._attn_implementation != "rerankd_query_rows"
