"""The real default model (SmolLM2-135M-Instruct), provisioned from its PyPI wheel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankd.engines.hf.engine import HFEngine
from rerankd.models.provision import MARKER_FILE, resolve_model
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.types import ChatMessage

pytestmark = pytest.mark.integration


def test_default_model_is_a_converted_hf_folder(smollm2_dir: Path) -> None:
    assert resolve_model(DEFAULT_MODEL) == smollm2_dir
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER_FILE} <= names
    assert not any(n.endswith((".gguf", ".whl")) for n in names)
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config
    assert config["max_position_embeddings"] == 8192


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path) -> Iterator[HFEngine]:
    eng = HFEngine.load(DEFAULT_MODEL)
    yield eng
    asyncio.run(eng.aclose())


def test_smollm2_generates_with_its_chat_template(engine: HFEngine) -> None:
    assert engine.context_size == 8192
    prompt = [ChatMessage(role="user", content="What is the capital of France? Answer in one sentence.")]
    rendered = engine.tokenizer.render_chat(prompt)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")

    a, b = asyncio.run(engine.generate([prompt, prompt], max_tokens=20))
    assert a.text.strip() and "Paris" in a.text
    assert a == b  # same prompt twice in one padded batch: same greedy answer
    assert a.prompt_tokens == engine.tokenizer.count_chat(prompt)
    assert 1 <= a.completion_tokens <= 20


def test_smollm2_first_token_logprobs(smollm2_dir: Path) -> None:
    eng = HFEngine.load(str(smollm2_dir))
    letters = [eng.tokenizer.encode(c) for c in "ABC"]
    assert all(len(t) == 1 for t in letters)
    prompt = [ChatMessage(role="user", content="Answer with one letter: which of A, B, C comes first?")]
    text = eng.tokenizer.render_chat(prompt)
    [row] = asyncio.run(eng.next_token_logprobs([text], [t[0] for t in letters]))
    assert all(lp <= 0 for lp in row) and max(row) > -5
    asyncio.run(eng.aclose())
