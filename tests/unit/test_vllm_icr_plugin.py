"""The vLLM ICR plugin without vLLM running: the attention-rows helper, the version pin, the
architecture table and the entry point declaration (the plugin loaded by vLLM itself is
``tests/integration/test_vllm_icr.py``)."""

from __future__ import annotations

import logging
import sys
import types
from importlib.metadata import entry_points

import pytest
import torch

from rerankd.engines.vllm.icr import (
    SUPPORTED_VLLM_VERSIONS,
    UnsupportedVLLMVersion,
    check_vllm_version,
    icr_architecture,
)
from rerankd.engines.vllm.icr.rows import suffix_attention_to_keys


def _full_attention_rows(query: torch.Tensor, key: torch.Tensor, scale: float, n_rows: int) -> torch.Tensor:
    """Reference: the whole causal ``seq x seq`` matrix with repeated keys, last rows summed."""
    seq_len, n_heads, _ = query.shape
    groups = n_heads // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)  # [seq, heads, dim]
    scores = torch.einsum("qhd,khd->hqk", query.double(), k.double()) * scale
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return probs[:, seq_len - n_rows :, :].sum(dim=(0, 1))


@pytest.mark.parametrize(("n_heads", "n_kv"), [(4, 4), (4, 2), (6, 1)])
def test_rows_equal_full_attention(n_heads: int, n_kv: int) -> None:
    torch.manual_seed(0)
    seq_len, n_rows, dim = 23, 5, 8
    query = torch.randn(seq_len, n_heads, dim)
    key = torch.randn(seq_len, n_kv, dim)
    got = suffix_attention_to_keys(query[-n_rows:], key, dim**-0.5)
    want = _full_attention_rows(query, key, dim**-0.5, n_rows)
    assert got.dtype == torch.float32 and got.shape == (seq_len,)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # each row is a distribution per head: the total mass is rows x heads
    assert abs(float(got.sum()) - n_rows * n_heads) < 1e-4
    # causal: the last key is seen by the last row only
    assert float(got[-1]) <= n_heads + 1e-6


def test_rows_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="query rows"):
        suffix_attention_to_keys(torch.zeros(5, 2, 4), torch.zeros(3, 2, 4), 0.5)
    with pytest.raises(ValueError, match="group"):
        suffix_attention_to_keys(torch.zeros(2, 3, 4), torch.zeros(3, 2, 4), 0.5)


def test_version_pin() -> None:
    assert check_vllm_version("0.32.0") == "0.32.0"
    assert check_vllm_version("0.32.0+cpu") == "0.32.0+cpu"
    for bad in ("0.33.0", "0.31.2", "0.32.1", "1.0.0"):
        with pytest.raises(UnsupportedVLLMVersion, match=f"not {bad}") as err:
            check_vllm_version(bad)
        assert "0.32.0" in str(err.value) and "attention='off'" in str(err.value)
    assert "0.32.0" in SUPPORTED_VLLM_VERSIONS


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``vllm`` module of an unsupported version (nothing else in it)."""
    fake = types.ModuleType("vllm")
    fake.__version__ = "0.99.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


def test_unsupported_version_fails_at_engine_start(fake_vllm: types.ModuleType) -> None:
    from rerankd.engines.vllm.engine import VLLMEngine

    with pytest.raises(UnsupportedVLLMVersion, match=r"supports vLLM 0\.32\.0, not 0\.99\.0"):
        VLLMEngine.load("smollm2-135m-instruct")


def test_plugin_registers_nothing_on_unsupported_version(
    fake_vllm: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    from rerankd.engines.vllm.icr.plugin import register

    with caplog.at_level(logging.WARNING):
        register()  # would import vllm.ModelRegistry (absent from the fake) if it went on
    assert "not registered" in caplog.text and "0.99.0" in caplog.text


def test_architectures() -> None:
    assert icr_architecture(["Qwen2ForCausalLM"]) == "RerankdIcrQwen2Model"
    assert icr_architecture(["LlamaForCausalLM"]) == "RerankdIcrLlamaModel"
    assert icr_architecture(["MistralForCausalLM"]) == "RerankdIcrLlamaModel"
    with pytest.raises(ValueError, match="Gemma2ForCausalLM"):
        icr_architecture(["Gemma2ForCausalLM"])


def test_entry_point_declared() -> None:
    [ep] = [e for e in entry_points(group="vllm.general_plugins") if e.name == "rerankd_icr"]
    assert ep.value == "rerankd.engines.vllm.icr.plugin:register"
