"""context_query_attention against the eager attention of the full prompt, on tiny random models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rerankd.engines.hf.attention import (
    batched_context_query_attention,
    check_layer_window,
    context_query_attention,
)

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


def _reference(
    model: Any, context: list[int], suffix: list[int], layers: tuple[int, int] | None = None
) -> torch.Tensor:
    """Eager attention of the whole prompt: suffix rows, summed over layers (of the window)
    and heads, averaged over suffix tokens, context columns."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([context + suffix]), output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    n = len(context)
    start, end = layers or (0, len(out.attentions))
    rows = torch.stack([a[0, :, n:, :] for a in out.attentions[start:end]])  # [layers, heads, suffix, total]
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


SHAPE4 = {**SHAPE, "num_hidden_layers": 4}


def _deep_qwen2() -> Any:
    return Qwen2ForCausalLM(Qwen2Config(**SHAPE4))


@pytest.mark.parametrize("window", [(0, 4), (1, 3), (0, 1), (2, 4)], ids=str)
def test_layer_window_early_exit_equals_full_pass(window: tuple[int, int]) -> None:
    model = _model(_deep_qwen2)
    gen = torch.Generator().manual_seed(2)
    context = torch.randint(0, 500, (50,), generator=gen).tolist()
    suffixes = [torch.randint(0, 500, (6,), generator=gen).tolist(), [3, 4]]
    ran: list[int] = []
    hook = model.model.layers[-1].register_forward_hook(lambda *_: ran.append(1))
    try:
        early = context_query_attention(model, context, suffixes, chunk_size=16, layers=window)
        ran_early = len(ran)
        full = context_query_attention(model, context, suffixes, chunk_size=16, layers=window, early_exit=False)
    finally:
        hook.remove()
    # The top layer runs only when the window reaches it (prefill chunks + 2 suffix passes each).
    assert ran_early == (0 if window[1] < 4 else 4 + 2)
    for suffix, e, f in zip(suffixes, early, full, strict=True):
        torch.testing.assert_close(e, f, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(e, _reference(model, context, suffix, window), atol=1e-5, rtol=1e-5)


def test_per_layer_rows_sum_to_the_window() -> None:
    model = _model(_deep_qwen2)
    context, suffixes = list(range(3, 40)), [[5, 6, 7], [8]]
    [rows] = batched_context_query_attention(model, [(context, suffixes)], layers=(1, 4), per_layer=True)
    for suffix, r in zip(suffixes, rows, strict=True):
        assert r.shape == (3, len(context))
        (window,) = context_query_attention(model, context, [suffix], layers=(2, 4))
        torch.testing.assert_close(r[1:].sum(dim=0), window, atol=1e-6, rtol=1e-6)


def test_batched_equals_unbatched() -> None:
    """Left-padded contexts and right-padded suffixes give each query's own rows (fp32, 1e-5)."""
    model = _model(_qwen2_sliding)
    gen = torch.Generator().manual_seed(3)
    items = [
        (
            torch.randint(0, 500, (n,), generator=gen).tolist(),
            [torch.randint(0, 500, (m,), generator=gen).tolist() for m in ms],
        )
        for n, ms in ((60, (7, 3)), (23, (2, 9)), (41, (5,)), (1, (1, 4)))
    ]
    for window in (None, (1, 2)):
        batched = batched_context_query_attention(model, items, chunk_size=16, layers=window, pad_id=499)
        for (context, suffixes), got in zip(items, batched, strict=True):
            alone = context_query_attention(model, context, suffixes, chunk_size=16, layers=window)
            assert len(got) == len(suffixes)
            for g, a in zip(got, alone, strict=True):
                assert g.shape == (len(context),)
                torch.testing.assert_close(g, a, atol=1e-5, rtol=1e-5)


def test_layer_window_validation() -> None:
    assert check_layer_window(None, 24) == (0, 24)
    assert check_layer_window((4, 16), 24) == (4, 16)
    with pytest.raises(ValueError, match=r"layers must be START:END with 0 <= START < END, got 5:5"):
        check_layer_window((5, 5), 24)
    with pytest.raises(ValueError, match=r"layers must be .*got -1:3"):
        check_layer_window((-1, 3), 24)
    with pytest.raises(ValueError, match=r"layers 0:30 ends past the model's 24 layers"):
        check_layer_window((0, 30), 24)
    with pytest.raises(ValueError, match="past the model's 2 layers"):
        context_query_attention(_model(_llama), [1, 2, 3], [[4]], layers=(0, 3))
