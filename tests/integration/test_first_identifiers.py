"""FIRST's identifier tokens with the real tokenizers of the bundled models: SmolLM2 (the
default, pulled by ``make test``) writes ``[`` and the letter as two tokens; the committed Qwen2.5
tokenizer fixture is the bundled model's own (checked whenever that model is cached)."""

from __future__ import annotations

import gzip
import json
import string
from pathlib import Path

import pytest

from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.models.provision import is_cached, model_dir
from rerankd.strategies.first_tokens import plan_identifiers
from rerankd.types import ChatMessage
from tests.support.tokenizer_fixtures import FIXTURES, PLAIN_FILES, load_fixture_tokenizer, minified

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_tokenizer_fixture_is_the_bundled_models(name: str) -> None:
    if not is_cached(name):
        pytest.skip(f"{name} is not cached (rerankd models pull {name})")
    from transformers import AutoTokenizer

    src = model_dir(name)
    fixture = FIXTURES / name
    assert gzip.decompress((fixture / "tokenizer.json.gz").read_bytes()) == minified(src / "tokenizer.json")
    for f in PLAIN_FILES:
        assert (fixture / f).read_bytes() == (src / f).read_bytes(), f
    real = HFTokenizer(AutoTokenizer.from_pretrained(str(src)))
    ours = load_fixture_tokenizer(name)
    messages = [ChatMessage(role="user", content="Rank [A] fleas, [B] cats.")]
    text = real.render_chat(messages) + "[A] > [O] > [Q]"
    assert ours.render_chat(messages) == real.render_chat(messages)
    assert ours.encode(text) == real.encode(text)
    assert json.loads((fixture / "tokenizer_config.json").read_text())["eos_token"] == real.hf.eos_token


def test_smollm2_writes_bracket_and_letter_apart(smollm2_dir: Path) -> None:
    """SmolLM2 merges no "[X": as_written is the single pass after an appended "[", reading the
    letter tokens it writes there."""
    from transformers import AutoTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(str(smollm2_dir)))
    tail = tok.render_chat([ChatMessage(role="user", content="Rank.")])[-64:]
    assert tok.hf.convert_ids_to_tokens(tok.encode(tail + "[A]"))[-3:] == ["[", "A", "]"]
    plan = plan_identifiers(tok, 20, tail, "as_written")
    assert plan.rule == "after_bracket" and plan.note is None
    assert plan == plan_identifiers(tok, 20, tail, "after_bracket")
    assert tok.hf.convert_ids_to_tokens(list(plan.after)) == list(string.ascii_uppercase[:20])
    prompts, ids = plan.request("P", 20)
    assert prompts == ["P["] and ids == list(plan.after)
