"""The ICR prompt: OSU wording, context/suffix split, passage spans, word cut."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from rerankd.prompts.icr import build_icr_prompt, format_passage, icr_user_content, truncate_words
from rerankd.types import ChatMessage


class TemplateTokenizer:
    """A ChatML-like template; tokens are whitespace words."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join("x" * i for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        out = "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        out += "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode(self.render_chat(messages)))


PASSAGES = [("Alpha", "first passage text."), (None, "second passage, no title."), ("", "third one.")]


def test_user_content_matches_osu_wording() -> None:
    # Written by hand from OSU-NLP-Group/In-Context-Reranking, src/in_context_reranker.py,
    # InContextReranker._prepare_input_for_document_retrieval (prompt_template="instruct",
    # query_position="last", retrieval_type="IE"): " Here are some paragraphs:", then
    # separator + "[i] doc" per document, separator + retrieval_instruction_late + separator
    # + "Query:" + " " + query.strip(); documents are (title + "\n" + text).strip() as built in
    # experiments.py.  Separator "\n\n" (their Mistral/default one; Llama used " \n\n"); the
    # leading space and the raw [INST]/header markers are replaced by the chat template.
    content, _, _ = icr_user_content(
        "  who wrote it? ", [format_passage(t, x) for t, x in PASSAGES], retrieval_type="IE"
    )
    assert content == (
        "Here are some paragraphs:\n\n"
        "[1] Alpha\nfirst passage text.\n\n"
        "[2] second passage, no title.\n\n"
        "[3] third one.\n\n"
        "Please find information that are relevant to the following query in the paragraphs above.\n\n"
        "Query: who wrote it?"
    )
    qa, _, _ = icr_user_content("q", ["p"], retrieval_type="QA")
    assert qa == (
        "Here are some paragraphs:\n\n[1] p\n\n"
        "Please answer the following question based on the information in the paragraphs above.\n\n"
        "Query: q"
    )


def test_context_and_suffixes_split_the_rendered_prompts() -> None:
    tok = TemplateTokenizer()
    p = build_icr_prompt("who wrote it?", PASSAGES, tok)
    assert p.context + p.suffix == tok.render_chat(p.messages)
    assert p.context + p.na_suffix == tok.render_chat(p.na_messages)
    assert p.context.startswith("<|im_start|>system\n") and p.context.endswith("third one.\n\n")
    assert p.suffix == (
        "Please find information that are relevant to the following query in the paragraphs above.\n\n"
        "Query: who wrote it?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert p.na_suffix.endswith("Query: N/A<|im_end|>\n<|im_start|>assistant\n")
    assert [p.context[s:e] for s, e in p.doc_char_spans] == [
        "[1] Alpha\nfirst passage text.",
        "[2] second passage, no title.",
        "[3] third one.",
    ]
    custom = build_icr_prompt("q", PASSAGES, tok, calibration_query="none")
    assert custom.na_suffix.endswith("Query: none<|im_end|>\n<|im_start|>assistant\n")


def test_word_cut_applies_to_text_only() -> None:
    assert truncate_words("a  b\nc d e", 3) == "a  b\nc"
    assert truncate_words("a b", 5) == "a b"
    tok = TemplateTokenizer()
    p = build_icr_prompt("q", [("Long Title Here", "one two three four five")], tok, max_words_per_passage=2)
    (s, e) = p.doc_char_spans[0]
    assert p.context[s:e] == "[1] Long Title Here\none two"


def test_rejects_templates_that_rewrite_content_and_empty_input() -> None:
    class Shouting(TemplateTokenizer):
        def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
            return super().render_chat(messages, add_generation_prompt).upper()

    with pytest.raises(ValueError, match="verbatim"):
        build_icr_prompt("q", PASSAGES, Shouting())
    with pytest.raises(ValueError):
        build_icr_prompt("q", [], TemplateTokenizer())
    with pytest.raises(ValueError):
        build_icr_prompt("  ", PASSAGES, TemplateTokenizer())


class RegexTokenizer(TemplateTokenizer):
    """Tokens are the pieces of a pre-tokeniser regex (ids: hashes of the pieces)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    def encode(self, text: str) -> list[int]:
        return [hash(piece) for piece in self.pattern.findall(text)]


# Llama-3 / Qwen2 style: punctuation glues to the newlines after it; newline runs stay whole.
GLUING = r"[^\s\w]+\n*|\s*\n+|\w+|\s+"
# GPT-2 style (SmolLM2): a whitespace run before a word leaves its last character apart.
GPT2 = r"\s+(?!\S)|\s+|\S+"


def test_cut_tokenises_like_the_whole_prompt() -> None:
    glue = build_icr_prompt("q", PASSAGES, RegexTokenizer(GLUING))
    assert glue.context.endswith("third one.\n\n")  # OSU's cut: after the separator
    gpt2 = build_icr_prompt("q", PASSAGES, RegexTokenizer(GPT2))
    assert gpt2.context.endswith("third one.")  # the separator moves into the query span
    assert gpt2.suffix.startswith("\n\nPlease find")
    for p, pattern in ((glue, GLUING), (gpt2, GPT2)):
        tok = RegexTokenizer(pattern)
        for suffix in (p.suffix, p.na_suffix):
            assert tok.encode(p.context) + tok.encode(suffix) == tok.encode(p.context + suffix)
        assert [p.context[s:e] for s, e in p.doc_char_spans][-1] == "[3] third one."
