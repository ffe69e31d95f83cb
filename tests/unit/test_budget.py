"""fit_prompt: prompts fit the context by cutting passages, never the instructions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerankd.prompts import (
    FittedPrompt,
    Passage,
    PromptTemplate,
    PromptTooLongError,
    fit_prompt,
    get_template,
)
from rerankd.prompts.tiktoken_tokenizer import TiktokenTokenizer
from rerankd.types import ChatMessage, Tokenizer

QUERY = "how do cats purr"
ALL_TEMPLATES = ["rank_gpt", "rank_zephyr", "rank_zephyr_legacy", "first", "fullrank", "rank_zephyr_alpha"]


class WordTokenizer:
    """One token per whitespace-separated word; a simple tagged chat format."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []

    def encode(self, text: str) -> list[int]:
        out = []
        for w in text.split():
            if w not in self._ids:
                self._ids[w] = len(self._words)
                self._words.append(w)
            out.append(self._ids[w])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._words[i] for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|{m.role}|>\n{m.content}\n" for m in messages)
        return text + "<|assistant|>\n" if add_generation_prompt else text

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode(self.render_chat(messages)))


class CharTokenizer(WordTokenizer):
    """One token per character."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)


@pytest.fixture(scope="module")
def tiktoken_tok(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TiktokenTokenizer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        yield TiktokenTokenizer("cl100k_base")


@pytest.fixture(params=["word", "char", "tiktoken"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "word":
        return WordTokenizer()
    if request.param == "char":
        return CharTokenizer()
    t: Tokenizer = request.getfixturevalue("tiktoken_tok")
    return t


def _long(n_words: int, stem: str = "purr") -> str:
    return " ".join(f"{stem}{i % 37}" for i in range(n_words))


LONG_PASSAGES = [
    Passage(text=_long(250), title="Purring"),
    Passage(text="The hyoid bone [2] vibrates."),
    Passage(text=_long(400, "larynx")),
]


def test_protocols() -> None:
    assert isinstance(WordTokenizer(), Tokenizer)
    for name in ALL_TEMPLATES:
        assert isinstance(get_template(name), PromptTemplate)


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_prompt_fits_unchanged(name: str, tok: Tokenizer) -> None:
    template = get_template(name)
    budget = template.output_budget(len(LONG_PASSAGES), tok)
    fitted = fit_prompt(template, QUERY, LONG_PASSAGES, tok, 100_000, budget)
    assert isinstance(fitted, FittedPrompt)
    assert not fitted.truncated
    assert fitted.max_tokens is None
    assert fitted.max_words == template.default_max_words(len(LONG_PASSAGES))
    assert fitted.messages == template.render(QUERY, LONG_PASSAGES)
    assert fitted.prompt_tokens == tok.count_chat(fitted.messages)


def _context_needing_cut(template: PromptTemplate, tok: Tokenizer, budget: int) -> tuple[int, int]:
    full = tok.count_chat(template.render(QUERY, LONG_PASSAGES))
    empty = tok.count_chat(template.render(QUERY, LONG_PASSAGES, max_tokens=0, tokenizer=tok))
    assert empty < full
    return (full + empty) // 2 + budget, empty


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_passages_cut_instructions_intact(name: str, tok: Tokenizer) -> None:
    template = get_template(name)
    budget = template.output_budget(len(LONG_PASSAGES))
    context, _ = _context_needing_cut(template, tok, budget)
    fitted = fit_prompt(template, QUERY, LONG_PASSAGES, tok, context, budget)

    assert fitted.truncated
    assert fitted.max_tokens is not None and fitted.max_tokens > 0
    assert fitted.prompt_tokens == tok.count_chat(fitted.messages)
    assert fitted.prompt_tokens <= context - budget
    # exactly the template's render with that per-passage cap
    assert fitted.messages == template.render(QUERY, LONG_PASSAGES, max_tokens=fitted.max_tokens, tokenizer=tok)
    # the cap is the largest that fits (these tokenizers count monotonically)
    bigger = template.render(QUERY, LONG_PASSAGES, max_tokens=fitted.max_tokens + 1, tokenizer=tok)
    assert tok.count_chat(bigger) > context - budget

    full = template.render(QUERY, LONG_PASSAGES)
    assert [m.role for m in fitted.messages] == [m.role for m in full]
    words = template.default_max_words(len(LONG_PASSAGES))
    originals = [template.format_passage(p, words) for p in LONG_PASSAGES]
    if name == "rank_gpt":
        # every non-passage turn is identical; passage turns are "[i] " + a prefix of the passage
        for got, want, idx in zip(fitted.messages, full, range(len(full)), strict=True):
            if got.role == "user" and 3 <= idx < 3 + 2 * len(LONG_PASSAGES):
                head = f"[{(idx - 3) // 2 + 1}] "
                assert got.content.startswith(head)
                assert originals[(idx - 3) // 2].startswith(got.content[len(head) :])
            else:
                assert got == want
    else:
        assert fitted.messages[0] == full[0]  # system message
        got_text, full_text = fitted.messages[-1].content, full[-1].content
        head_end = full_text.index("[", full_text.index("[]") + 2)
        tail_start = full_text.index("Search Query:")
        assert got_text[:head_end] == full_text[:head_end]
        assert got_text.endswith(full_text[tail_start:])
        body = got_text[head_end : len(got_text) - (len(full_text) - tail_start)]
        lines = body.split("\n")[:-1]
        assert len(lines) == len(LONG_PASSAGES)
        for line, original in zip(lines, originals, strict=True):
            content = line.split("] ", 1)[1]
            assert original.startswith(content)
        assert fitted.messages[-1].content.count("\n") == full[-1].content.count("\n")
    # the short passage was not cut
    assert "vibrates." in "".join(m.content for m in fitted.messages)


@pytest.mark.parametrize("name", ["rank_gpt", "rank_zephyr", "first"])
def test_too_small_context_raises(name: str, tok: Tokenizer) -> None:
    template = get_template(name)
    budget = 20
    minimum = tok.count_chat(template.render(QUERY, LONG_PASSAGES, max_tokens=0, tokenizer=tok))
    context = minimum + budget - 1
    with pytest.raises(PromptTooLongError) as err:
        fit_prompt(template, QUERY, LONG_PASSAGES, tok, context, budget)
    assert isinstance(err.value, ValueError)
    msg = str(err.value)
    assert f"context size {context}" in msg
    assert f"output budget {budget}" in msg
    assert f"minimum prompt length (every passage emptied) is {minimum} tokens" in msg
    # one more token and it fits, with every long passage emptied
    fitted = fit_prompt(template, QUERY, LONG_PASSAGES, tok, context + 1, budget)
    assert fitted.truncated
    assert fitted.prompt_tokens <= context + 1 - budget


def test_budget_at_least_context_raises() -> None:
    with pytest.raises(PromptTooLongError, match="output budget 5000"):
        fit_prompt(get_template("rank_zephyr"), QUERY, LONG_PASSAGES, WordTokenizer(), 4096, 5000)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fit_prompt(get_template("rank_zephyr"), QUERY, LONG_PASSAGES, WordTokenizer(), 0, 0)
    with pytest.raises(ValueError):
        fit_prompt(get_template("rank_zephyr"), QUERY, LONG_PASSAGES, WordTokenizer(), 100, -1)


def test_explicit_max_words() -> None:
    fitted = fit_prompt(get_template("rank_zephyr"), QUERY, LONG_PASSAGES, WordTokenizer(), 10_000, 10, 5)
    assert fitted.max_words == 5
    assert not fitted.truncated
    assert "[3] larynx0 larynx1 larynx2 larynx3 larynx4\n" in fitted.messages[-1].content


def test_tiktoken_cut_never_leaves_partial_characters(tiktoken_tok: TiktokenTokenizer) -> None:
    passages = [Passage(text="猫の喉を鳴らす仕組み 🐱🐱🐱 " * 40), Passage(text="ゴロゴロ " * 80)]
    template = get_template("rank_zephyr")
    budget = template.output_budget(2, tiktoken_tok)
    full = tiktoken_tok.count_chat(template.render(QUERY, passages))
    fitted = fit_prompt(template, QUERY, passages, tiktoken_tok, full // 2, budget)
    assert fitted.truncated
    assert "\ufffd" not in fitted.messages[-1].content
    assert fitted.prompt_tokens <= full // 2 - budget


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(
        st.lists(st.sampled_from(["cat", "purr", "[2]", "larynx", "é", "x"]), max_size=60).map(" ".join),
        min_size=1,
        max_size=6,
    ),
    context=st.integers(min_value=1, max_value=600),
    budget=st.integers(min_value=0, max_value=40),
    name=st.sampled_from(ALL_TEMPLATES),
)
def test_fit_property(texts: list[str], context: int, budget: int, name: str) -> None:
    tok = WordTokenizer()
    template = get_template(name)
    passages = [Passage(text=t) for t in texts]
    try:
        fitted = fit_prompt(template, QUERY, passages, tok, context, budget)
    except PromptTooLongError:
        empty = template.render(QUERY, passages, max_tokens=0, tokenizer=tok)
        assert tok.count_chat(empty) > context - budget
        return
    assert fitted.prompt_tokens == tok.count_chat(fitted.messages) <= context - budget
    if not fitted.truncated:
        assert fitted.messages == template.render(QUERY, passages)
