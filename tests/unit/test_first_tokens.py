"""FIRST reads each identifier as the model's tokenizer writes it (the Qwen2.5 tokenizer of the
bundled model, from a committed fixture; a Llama-2-style SentencePiece tokenizer built locally),
and its prompts leave room for the tokens it reads."""

from __future__ import annotations

import asyncio
import math
import random
import string
from collections.abc import Sequence

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rerankd.engines.base import Capability
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.strategies import rerank
from rerankd.strategies.first_tokens import identifier_token_ids, plan_identifiers
from rerankd.types import Candidate, ChatMessage, FirstConfig, IdentifierRule, Query, RerankRequest
from tests.support.scripted_engine import ScriptedEngine, WordTokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)


def llama2_style_tokenizer(bracket_pieces: str = "") -> HFTokenizer:
    """A Unigram model with Llama-2's Metaspace pre-tokenizer (dummy prefix on the first word)
    and byte-like single characters: ``"A"`` alone encodes as ``"▁A"``.  ``bracket_pieces``:
    letters ``X`` that get a ``"[X"`` piece (written as one token after a prompt)."""
    chars = string.ascii_letters + string.digits + string.punctuation + "\n"
    vocab: list[tuple[str, float]] = [("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(c, -5.0) for c in chars]
    vocab += [("▁" + c, -2.0) for c in string.ascii_letters + "["]  # word-initial letters win
    vocab += [("▁Rank", -1.0), ("▁the", -1.0), ("▁passages", -1.0), ("INST", -1.0)]
    vocab += [("[" + c, -1.0) for c in bracket_pieces]
    backend = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return HFTokenizer(fast)


def test_llama2_style_letters_are_the_tokens_emitted_after_the_bracket() -> None:
    tok = llama2_style_tokenizer()
    prompt = "[INST] Rank the passages [/INST] "
    letter_alone = tok.encode("A")
    assert [tok.hf.convert_ids_to_tokens(i) for i in letter_alone] == ["▁A"]  # the dummy prefix
    # What the model writes after the prompt: "[A] > [B]"; its token after "[" is the plain "A".
    answer = tok.encode(prompt + "[A] > [B]")
    emitted = answer[len(tok.encode(prompt + "["))]
    assert tok.hf.convert_ids_to_tokens(emitted) == "A"
    assert emitted != letter_alone[0]

    ids = identifier_token_ids(tok, 3, prompt)
    assert ids[0] == emitted
    assert tok.hf.convert_ids_to_tokens(ids) == ["A", "B", "C"]


def test_byte_level_tokenizer_ids_match_plain_letters(tiny_model_dir: object) -> None:
    from transformers import AutoTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    prompt = "<|im_start|>assistant\n"
    assert identifier_token_ids(tok, 4, prompt) == [tok.encode(c)[0] for c in "ABCD"]


@pytest.mark.parametrize("identifiers", ["as_written", "after_bracket"])
def test_first_prompts_leave_room_for_the_generated_token(identifiers: IdentifierRule) -> None:
    """The prompt and the prompt plus "[" have at most context_size - 1 tokens (vLLM and
    OpenAI-compatible servers reject a prompt as long as the context), so the answer start has
    room for "[" and a letter."""
    cands = [Candidate(docid=f"d{i}", text=" ".join(f"w{i}x{j}" for j in range(40)) + f" rel={i}") for i in range(6)]
    strategy = FirstConfig(identifiers=identifiers)
    req = RerankRequest(query=Query(text="which passage"), candidates=cands, strategy=strategy)
    probe = ScriptedEngine()
    asyncio.run(rerank(req, probe))
    full = len(probe.tokenizer.encode(probe.prompts[0].removesuffix("[") + "["))
    for context_size in (full, full - 1, full - 30):
        eng = ScriptedEngine(context_size=context_size)
        res = asyncio.run(rerank(req, eng))
        [prompt] = eng.prompts
        # the word tokenizer writes "[A" as one token: as_written reads it at the answer start
        assert prompt.endswith("[") == (identifiers == "after_bracket")
        assert len(eng.tokenizer.encode(prompt.removesuffix("[") + "[")) <= context_size - 1
        assert res.usage.prompt_tokens == len(eng.tokenizer.encode(prompt))


def test_openai_engine_keys_the_emitted_letter_as_servers_do() -> None:
    """Servers key top logprobs by token text in context: "A" after "[" is "A", "▁A" is " A"."""
    from rerankd.engines.openai.engine import OpenAIEngine, OpenAISettings

    tok = llama2_style_tokenizer()
    engine = OpenAIEngine("m", OpenAISettings(base_url="http://127.0.0.1:9/v1"), tok, 4096)
    [emitted] = identifier_token_ids(tok, 1, "[INST] Rank the passages [/INST] ")
    assert engine._token_text(emitted) == "A"
    assert engine._token_text(tok.encode("A")[0]) == " A"


# ----------------------------------------------------------------------------- identifier rules

QWEN = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def qwen_tokenizer() -> HFTokenizer:
    """The bundled Qwen2.5 model's own tokenizer and chat template (committed fixture)."""
    from tests.support.tokenizer_fixtures import load_fixture_tokenizer

    return load_fixture_tokenizer(QWEN)


class TableEngine:
    """Next-token log-probs from two tables: one at the answer start, one after a final ``[``."""

    name = "table"
    model = "table"
    capabilities = frozenset(Capability)

    def __init__(self, tokenizer: HFTokenizer, at_start: dict[int, float], after: dict[int, float]) -> None:
        self.tokenizer = tokenizer
        self.context_size = 32_768
        self.at_start = at_start
        self.after = after
        self.calls: list[tuple[list[str], list[int]]] = []

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        self.calls.append((list(prompts), list(token_ids)))
        tables = [self.after if p.endswith("[") else self.at_start for p in prompts]
        return [[table.get(t, -30.0) for t in token_ids] for table in tables]

    async def aclose(self) -> None:
        return None


def first_request(n: int, rule: IdentifierRule = "as_written") -> RerankRequest:
    cands = [Candidate(docid=f"d{i}", text=f"passage {i} about fleas") for i in range(n)]
    return RerankRequest(query=Query(text="flea life cycle"), candidates=cands, strategy=FirstConfig(identifiers=rule))


def token(tok: HFTokenizer, text: str) -> int:
    return int(tok.hf.convert_tokens_to_ids(text))


def answer_start(tok: HFTokenizer) -> str:
    """The tail of a FIRST prompt for ``tok``: its generation prompt."""
    return tok.render_chat([ChatMessage(role="user", content="Rank.")], add_generation_prompt=True)[-64:]


def test_qwen_merged_identifiers_are_read_at_the_answer_start(qwen_tokenizer: HFTokenizer) -> None:
    tok = qwen_tokenizer
    tail = answer_start(tok)
    assert tail.endswith("<|im_start|>assistant\n")
    # What the model writes at the answer start: "[A" is one token; "[O" is "[", "O".
    assert tok.hf.convert_ids_to_tokens(tok.encode(tail + "[A]"))[-4:] == ["assistant", "Ċ", "[A", "]"]
    assert tok.hf.convert_ids_to_tokens(tok.encode(tail + "[O]"))[-4:] == ["Ċ", "[", "O", "]"]

    plan = plan_identifiers(tok, 20, tail, "as_written")
    assert plan.rule == "as_written" and plan.note is None
    letters = string.ascii_uppercase[:20]
    merged = {c: tok.hf.convert_ids_to_tokens(t) for c, t in zip(letters, plan.start, strict=True) if t is not None}
    assert merged == {c: "[" + c for c in letters if c not in "OQ"}  # 18 of the 20
    assert [c for c, t in zip(letters, plan.start, strict=True) if t is None] == ["O", "Q"]
    assert plan.bracket == token(tok, "[")
    assert tok.hf.convert_ids_to_tokens([plan.after[14], plan.after[16]]) == ["O", "Q"]
    # each is what tokenising the answer adds to the prompt
    for c, t in zip(letters, plan.start, strict=True):
        ids = tok.encode(tail + "[" + c)
        assert ids[: len(tok.encode(tail))] == tok.encode(tail)
        assert ids[len(tok.encode(tail)) :] == ([t] if t is not None else [token(tok, "["), token(tok, c)])


def test_qwen_first_combines_the_extra_step_after_the_bracket(qwen_tokenizer: HFTokenizer) -> None:
    """O and Q score log P("[") + log P(letter | "["), from one call with both prompts."""
    tok = qwen_tokenizer
    letters = string.ascii_uppercase[:20]
    at_start = {token(tok, "[" + c): -1.0 - 0.1 * i for i, c in enumerate(letters) if c not in "OQ"}
    at_start[token(tok, "[")] = math.log(0.5)
    after = {token(tok, "O"): math.log(0.9), token(tok, "Q"): math.log(0.05), token(tok, "A"): 0.0}
    eng = TableEngine(tok, at_start, after)
    res = asyncio.run(rerank(first_request(20), eng))

    [(prompts, ids)] = eng.calls  # one call, two prompts: the answer start and the same plus "["
    assert prompts[1] == prompts[0] + "[" and prompts[0].endswith("<|im_start|>assistant\n")
    assert sorted(ids) == sorted([*at_start, token(tok, "O"), token(tok, "Q")])
    expected = {c: at_start[token(tok, "[" + c)] for c in letters if c not in "OQ"}
    expected["O"] = math.log(0.5) + math.log(0.9)  # -0.80: above A (-1.0)
    expected["Q"] = math.log(0.5) + math.log(0.05)  # -3.69: below T (-2.9)
    order = sorted(letters, key=lambda c: -expected[c])
    assert res.docids == [f"d{letters.index(c)}" for c in order]
    assert res.docids[0] == "d14" and res.docids[-1] == "d16"
    total = sum(math.exp(v) for v in expected.values())
    assert res.ranking[0].score == pytest.approx(math.exp(expected["O"]) / total)
    assert res.usage.llm_calls == 2
    assert res.usage.prompt_tokens == len(tok.encode(prompts[0])) + len(tok.encode(prompts[1]))


def test_qwen_window_without_split_letters_is_one_prompt(qwen_tokenizer: HFTokenizer) -> None:
    tok = qwen_tokenizer
    eng = TableEngine(tok, {token(tok, "[C"): -0.5}, {})
    res = asyncio.run(rerank(first_request(10), eng))  # A..J: all merged
    [(prompts, ids)] = eng.calls
    assert len(prompts) == 1 and not prompts[0].endswith("[")
    assert tok.hf.convert_ids_to_tokens(ids) == ["[" + c for c in "ABCDEFGHIJ"]
    assert res.docids[0] == "d2" and res.usage.llm_calls == 1


def test_qwen_after_bracket_reads_the_letters_after_an_appended_bracket(qwen_tokenizer: HFTokenizer) -> None:
    """The old rule: "[" appended, the plain letter token read after it, for merged letters too
    (their fallback is the letter after a sentinel, which is the plain letter here)."""
    tok = qwen_tokenizer
    plan = plan_identifiers(tok, 20, answer_start(tok), "after_bracket")
    assert tok.hf.convert_ids_to_tokens(list(plan.after)) == list(string.ascii_uppercase[:20])
    eng = TableEngine(tok, {}, {token(tok, "E"): -0.1})
    res = asyncio.run(rerank(first_request(20, "after_bracket"), eng))
    [(prompts, _)] = eng.calls
    assert len(prompts) == 1 and prompts[0].endswith("<|im_start|>assistant\n[")
    assert res.docids[0] == "d4"


def test_llama2_style_fallback_reads_the_emitted_letter_not_the_dummy_prefixed_one() -> None:
    """With a "[A" piece, "[" + "A" merges after the prompt; the after_bracket rule then reads
    the "A" the model writes after a "[" token, never encode("A") = "▁A"."""
    tok = llama2_style_tokenizer(bracket_pieces="A")
    prompt = "[INST] Rank the passages [/INST]"
    pieces = tok.hf.convert_ids_to_tokens(tok.encode(prompt + "[A] > [B]"))
    assert "[A" in pieces  # written as one token after the prompt
    assert tok.hf.convert_ids_to_tokens(tok.encode("A")) == ["▁A"]

    ids = identifier_token_ids(tok, 3, prompt)
    assert tok.hf.convert_ids_to_tokens(ids) == ["A", "B", "C"]
    assert ids[0] != tok.encode("A")[0]

    plan = plan_identifiers(tok, 3, prompt, "as_written")
    assert plan.rule == "as_written"
    assert tok.hf.convert_ids_to_tokens([plan.start[0]]) == ["[A"]  # read at the answer start
    assert plan.start[1:] == (None, None) and plan.bracket == token(tok, "[")
    assert tok.hf.convert_ids_to_tokens(list(plan.after[1:])) == ["B", "C"]


def test_as_written_falls_back_with_a_warning_when_the_prompt_end_merges() -> None:
    """A prompt whose last token merges with "[" cannot be extended by the identifier's tokens:
    the strategy reads after an appended "[" and says so."""

    class GluedPrompt(WordTokenizer):
        def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
            return super().render_chat(messages, add_generation_prompt).rstrip("\n")

    eng = ScriptedEngine()
    eng.tokenizer = GluedPrompt()
    cands = [Candidate(docid=f"d{i}", text=f"passage {i} rel={i}") for i in range(4)]
    res = asyncio.run(rerank(RerankRequest(query=Query(text="q"), candidates=cands, strategy=FirstConfig()), eng))
    assert any("identifiers='as_written'" in w and "after_bracket" in w for w in res.warnings)
    assert eng.prompts[0].endswith("<assistant>[")
    assert res.docids == ["d3", "d2", "d1", "d0"]


def test_smollm2_style_split_letters_keep_one_pass_after_the_bracket(tiny_model_dir: object) -> None:
    """A byte-level tokenizer without "[X" merges (the tiny model's, like SmolLM2's): as_written
    is the single pass after "[" (log P("[") is common to every letter)."""
    from transformers import AutoTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    tail = "<|im_start|>assistant\n"
    assert plan_identifiers(tok, 4, tail, "as_written") == plan_identifiers(tok, 4, tail, "after_bracket")


def test_hf_engine_reads_a_prefix_prompt_from_the_longer_ones_pass(tiny_model_dir: object) -> None:
    """P and P + "[" in one call share a forward pass with the same log-probs as separate calls."""
    from rerankd.engines.hf.engine import HFEngine, _prefix_rows

    assert _prefix_rows([[1, 2], [1, 2, 3], [4], [1, 2, 3]]) == ([[1, 2, 3], [4]], [(0, 1), (0, 0), (1, 0), (0, 0)])
    engine = HFEngine.load(str(tiny_model_dir), dtype="float32")
    prompt = "<|im_start|>user\nRank [A] fleas [B] cats<|im_end|>\n<|im_start|>assistant\n"
    ids = [5, 6, 7]

    async def go() -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
        try:
            alone = await engine.next_token_logprobs([prompt], ids)
            after = await engine.next_token_logprobs([prompt + "["], ids)
            both = await engine.next_token_logprobs([prompt, prompt + "["], ids)
            return alone, after, both
        finally:
            await engine.aclose()

    alone, after, both = asyncio.run(go())
    assert engine.stats.recent_sizes[-1] == 2  # one batch, one row
    assert both[0] == pytest.approx(alone[0], abs=1e-5)
    assert both[1] == pytest.approx(after[0], abs=1e-5)
    assert both[0] != pytest.approx(both[1], abs=1e-3)


def test_openai_engine_keys_merged_identifiers_by_their_text(qwen_tokenizer: HFTokenizer) -> None:
    """Servers key top logprobs by token text: the merged "[A" is "[A", the "[" and "O" are themselves."""
    from rerankd.engines.openai.engine import OpenAIEngine, OpenAISettings

    engine = OpenAIEngine("m", OpenAISettings(base_url="http://127.0.0.1:9/v1"), qwen_tokenizer, 32_768)
    assert [engine._token_text(token(qwen_tokenizer, t)) for t in ("[A", "[", "O")] == ["[A", "[", "O"]


def test_identifier_rule_is_validated() -> None:
    from pydantic import ValidationError

    assert FirstConfig().identifiers == "as_written"
    with pytest.raises(ValidationError, match="identifiers"):
        FirstConfig(identifiers="after_letter")  # type: ignore[arg-type]


class ConstantEngine(TableEngine):
    """The same log-probs for the identifiers of every window, in order (after ``[``)."""

    def __init__(self, tokenizer: HFTokenizer, values: Sequence[float]) -> None:
        super().__init__(tokenizer, {}, {})
        self.values = list(values)

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        self.calls.append((list(prompts), list(token_ids)))
        return [self.values[: len(token_ids)] for _ in prompts]


def test_non_finite_logprobs_rank_last_with_finite_scores(tiny_model_dir: object) -> None:
    """An engine answering NaN (a broken forward pass) or -inf (probability 0) for some identifiers:
    the output is still a permutation, the finite ones keep their order, the others come last,
    every score is a number, and NaN is reported."""
    from transformers import AutoTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))  # split letters: one row
    values = [-1.0, math.nan, -3.0, -math.inf, -0.5, math.inf]
    res = asyncio.run(rerank(first_request(6), ConstantEngine(tok, values)))
    assert res.docids[:3] == ["d4", "d0", "d2"]
    assert sorted(res.docids[3:]) == ["d1", "d3", "d5"]
    scores = [d.score for d in res.ranking]
    assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)
    assert scores[3:] == [0.0, 0.0, 0.0]
    [warning] = [w for w in res.warnings if "NaN or +inf" in w]
    assert "identifiers B, F" in warning

    every = asyncio.run(rerank(first_request(4), ConstantEngine(tok, [-math.inf] * 4)))
    assert every.docids == ["d0", "d1", "d2", "d3"]  # no information: first-stage order
    assert [d.score for d in every.ranking] == [0.25] * 4


class RandomEngine(TableEngine):
    """Seeded random log-probs; checks each call asks for distinct token ids."""

    def __init__(self, tokenizer: HFTokenizer, seed: int) -> None:
        super().__init__(tokenizer, {}, {})
        self.rng = random.Random(seed)

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        assert len(set(token_ids)) == len(token_ids)
        return [[-5.0 * self.rng.random() for _ in token_ids] for _ in prompts]


@pytest.mark.parametrize("rule", ["as_written", "after_bracket"])
def test_every_window_shape_gives_a_permutation_with_monotone_scores(
    qwen_tokenizer: HFTokenizer, rule: IdentifierRule
) -> None:
    """Windows smaller than 20, with and without the split O (15th) and Q (17th), n below, at and
    above the window, n = 1 and 2, several strides: a permutation, scores finite and monotone."""
    for window in (2, 5, 15, 17, 20):
        for stride in sorted({1, max(1, window // 2), window}):
            for n in sorted({1, 2, window - 1, window, window + 1, 2 * window + 3}):
                cands = [Candidate(docid=f"d{i}", text=f"passage {i}") for i in range(n)]
                strategy = FirstConfig(window_size=window, stride=stride, identifiers=rule)
                req = RerankRequest(query=Query(text="q"), candidates=cands, strategy=strategy)
                res = asyncio.run(rerank(req, RandomEngine(qwen_tokenizer, window * 1000 + n)))
                assert sorted(res.docids) == sorted(c.docid for c in cands), (window, stride, n)
                scores = [d.score for d in res.ranking]
                assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)
