"""Pieces of bench/gpu_smoke.py that need no model: inputs, tokenizers, verdicts, missing deps."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.strategies.first import identifier_token_ids
from rerankd.types import ChatMessage

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """bench/ importable for one test (sys.path restored after)."""
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    yield
    for name in ("_smoke_models", "_smoke_report", "_smoke_run", "gpu_smoke"):
        sys.modules.pop(name, None)


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_synthetic_queries_have_the_asked_shape_and_are_reproducible(bench: None) -> None:
    models = _load("_smoke_models")
    a = models.synthetic_queries(2, 7, 13, seed=3)
    assert [len(q.passages) for q in a] == [7, 7]
    assert all(len(p.split()) == 13 for q in a for p in q.passages)
    assert [q.passages for q in a] == [q.passages for q in models.synthetic_queries(2, 7, 13, seed=3)]


@pytest.mark.parametrize("chat", ["chatml", "mistral"])
def test_local_tokenizer_gives_first_single_token_letters_and_a_chat_template(bench: None, chat: str) -> None:
    models = _load("_smoke_models")
    texts = [p for q in models.synthetic_queries(1, 20, 30) for p in q.passages]
    tok = HFTokenizer(models.build_tokenizer(texts, 1024, chat))
    rendered = tok.render_chat([ChatMessage(role="user", content="Rank [A] and [B].")])
    ids = identifier_token_ids(tok, 20, rendered)
    assert len(set(ids)) == 20
    assert tok.hf.eos_token_id is not None
    # Vocabulary sized to the tokenizer: every id the model can emit decodes.
    assert max(tok.encode(rendered)) < len(tok.hf)


def test_icr_memory_verdict_flags_far_above_expectation(bench: None) -> None:
    models, report = _load("_smoke_models"), _load("_smoke_report")
    mem = report.IcrMemory(models.SPECS["qwen2-7b"], dtype_bytes=2, weights=13 * 10**9,
                           context_tokens=12_000, span_tokens=36, resident=13 * 10**9)  # fmt: skip
    expected = mem.expectation()
    assert expected["total"] == expected["kv"] + expected["rows"] + expected["prefill"]
    # The KV cache of Qwen2-7B (28 layers, 4 kv heads of 128) for 12036 tokens in bf16.
    assert expected["kv"] == 2 * 28 * 4 * 128 * 12_036 * 2
    assert mem.full_matrix() > expected["total"]  # a full N x N matrix would dwarf it
    mem.peak = mem.resident + expected["total"]
    assert not mem.flagged()
    mem.peak = mem.resident + int(3 * expected["total"])
    assert mem.flagged()

    r = report.Report(header=[])
    r.icr["qwen2-7b"] = mem
    r.row("qwen2-7b", "icr").seconds.append(1.0)
    assert r.status()[0] == 4
    r.row("qwen2-7b", "first").skipped = 1
    assert r.status()[0] == 3
    r.row("qwen2-7b", "sliding_window").failures.append("q0: not a permutation")
    assert r.status()[0] == 1


def test_missing_dependency_is_named_with_the_remedy(
    bench: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = _load("gpu_smoke")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, package=None: None if name == "pydantic" else real(name, package)
    )
    assert smoke.main(["--tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "missing Python package(s): pydantic" in err
    assert "bench/gpu_wheels.sh" in err
