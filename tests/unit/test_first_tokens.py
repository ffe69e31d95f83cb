"""FIRST reads the identifier tokens the model emits after ``[``, and its prompts leave room
for that one token (a Llama-2-style SentencePiece tokenizer built locally)."""

from __future__ import annotations

import asyncio
import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.strategies import rerank
from rerankd.strategies.first import identifier_token_ids
from rerankd.types import Candidate, FirstConfig, Query, RerankRequest
from tests.unit.scripted_engine import ScriptedEngine

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)


def llama2_style_tokenizer() -> HFTokenizer:
    """A Unigram model with Llama-2's Metaspace pre-tokenizer (dummy prefix on the first word)
    and byte-like single characters: ``"A"`` alone encodes as ``"▁A"``."""
    chars = string.ascii_letters + string.digits + string.punctuation + "\n"
    vocab: list[tuple[str, float]] = [("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(c, -5.0) for c in chars]
    vocab += [("▁" + c, -2.0) for c in string.ascii_letters + "["]  # word-initial letters win
    vocab += [("▁Rank", -1.0), ("▁the", -1.0), ("▁passages", -1.0), ("INST", -1.0)]
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


def test_first_prompts_leave_room_for_the_generated_token() -> None:
    """The rendered prompt plus "[" has at most context_size - 1 tokens (vLLM and OpenAI-compatible
    servers reject a prompt as long as the context)."""
    cands = [Candidate(docid=f"d{i}", text=" ".join(f"w{i}x{j}" for j in range(40)) + f" rel={i}") for i in range(6)]
    req = RerankRequest(query=Query(text="which passage"), candidates=cands, strategy=FirstConfig())
    probe = ScriptedEngine()
    asyncio.run(rerank(req, probe))
    full = len(probe.tokenizer.encode(probe.prompts[0]))
    for context_size in (full, full - 1, full - 30):
        eng = ScriptedEngine(context_size=context_size)
        res = asyncio.run(rerank(req, eng))
        [prompt] = eng.prompts
        assert prompt.endswith("[")
        assert len(eng.tokenizer.encode(prompt)) <= context_size - 1
        assert res.usage.prompt_tokens == len(eng.tokenizer.encode(prompt))


def test_openai_engine_keys_the_emitted_letter_as_servers_do() -> None:
    """Servers key top logprobs by token text in context: "A" after "[" is "A", "▁A" is " A"."""
    from rerankd.engines.openai import OpenAIEngine, OpenAISettings

    tok = llama2_style_tokenizer()
    engine = OpenAIEngine("m", OpenAISettings(base_url="http://127.0.0.1:9/v1"), tok, 4096)
    [emitted] = identifier_token_ids(tok, 1, "[INST] Rank the passages [/INST] ")
    assert engine._token_text(emitted) == "A"
    assert engine._token_text(tok.encode("A")[0]) == " A"
