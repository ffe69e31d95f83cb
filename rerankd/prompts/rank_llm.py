"""rank_llm's single-turn listwise prompt (RankVicuna / RankZephyr / FIRST / fullrank family).

Every variant renders an optional system message and one user turn::

    I will provide you with {num} passages, each indicated by {a numerical identifier} []. Rank the
    passages based on their relevance to the search query: {query}.\\n
    [\\n]                                   <- legacy only: a blank line after the prefix
    [1] {passage 1}\\n
    ...
    Search Query: {query}.\\nRank the {num} passages above ... e.g., [2] > [1], {closing}

The wordings differ in:

* ``rank_zephyr`` (castorini/rank_llm ``src/rank_llm/rerank/prompt_templates/rank_zephyr_template.yaml``,
  2025 on): no blank line after the prefix; closing ``Answer concisely and directly and only
  respond with the ranking results, ...``; system message without a final period; passages cut to a
  fixed ``max_passage_words`` (300).
* ``rank_zephyr_legacy`` (castorini/rank_llm ``rank_listwise_os_llm.py`` ``_add_prefix_prompt`` /
  ``_add_post_prompt`` / ``create_prompt``, commit 417c3898, Dec 2024, with ``variable_passages``; the
  wording of the RankZephyr training data, ``scripts/create_variable_length_samples.py``): a blank
  line after the prefix; closing ``Only respond with the ranking results, ...``; system message with a
  final period (``run_rank_llm.py``'s default); passages cut to ``int(300 * (20 / num))`` words.
* ``first``: the legacy wording with ``use_alpha`` (``a alphabetical identifier`` sic, ``[B] > [A]``), as
  rank_llm 417c3898 ran FirstMistral (README command: ``--variable_passages --use_alpha``).  The FIRST
  authors' gangiswag/llm-reranker ``scripts/utils/rank_listwise_os_llm.py`` has the same instruction
  text but drops the system message's final period, keeps the query as is, rewrites ``[A-z]+`` (not
  ``[n]``) in passages and always cuts to 300 words.
* ``rank_zephyr_alpha``: current rank_llm's ``rank_zephyr_alpha_template.yaml`` (``an alphabetical``).
* ``fullrank`` (8421BCD/fullrank ``utils.py`` ``add_prefix_prompt`` / ``add_post_prompt`` /
  ``convert_doc_to_prompt_content``, ``rerank/rank_listwise_os_llm.py`` ``create_prompt``): the legacy
  wording, query also stripped, passages cut to 100 words (``run_rank_llm.sh``).

Passages follow rank_llm's ``convert_doc_to_prompt_content``: ``Title: {title} Content: {text}`` when
titled, stripped, ``ftfy.fix_text`` (see :mod:`rerankd.prompts.text`), cut to the word limit, and
``[n]`` replaced by ``(n)``; the query gets the same ``[n]`` replacement.

Not reproduced here: legacy rank_llm without ``variable_passages`` (RankVicuna's default) used the
example ``[4] > [2]`` / ``[D] > [B]``; and rank_llm also ran ``ftfy.fix_text`` over the whole prompt
after applying the chat template, which is the engine's business, not the template's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rerankd.prompts.base import (
    IdentifierKind,
    Passage,
    estimate_output_tokens,
    exact_output_tokens,
    identifier,
)
from rerankd.prompts.text import cut_tokens, cut_words, fix_text, replace_bracket_numbers
from rerankd.types import ChatMessage, Tokenizer

RANK_LLM_SYSTEM = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
)
CLOSING_LEGACY = "Only respond with the ranking results, do not say any word or explain."
CLOSING_CURRENT = (
    "Answer concisely and directly and only respond with the ranking results, do not say any word or explain."
)


@dataclass(frozen=True)
class SingleTurnTemplate:
    """One rank_llm-style single-user-turn variant; see the module docstring for the wordings."""

    name: str
    identifier: IdentifierKind
    system_message: str | None
    identifier_phrase: str
    example_ordering: str
    closing: str
    blank_line_after_prefix: bool
    max_words: int = 300
    scale_words_by_window: bool = False
    strip_query: bool = False

    def default_max_words(self, n: int) -> int:
        """``max_words``, or legacy rank_llm's ``int(300 * (20 / n))`` when scaled by the window."""
        if self.scale_words_by_window and n > 0:
            return int(self.max_words * (20 / n))
        return self.max_words

    def format_passage(self, passage: Passage, max_words: int) -> str:
        """rank_llm's ``convert_doc_to_prompt_content``."""
        content = passage.text
        if passage.title:
            content = "Title: " + passage.title + " " + "Content: " + content
        content = fix_text(content.strip())
        return replace_bracket_numbers(cut_words(content, max_words))

    def render(
        self,
        query: str,
        passages: Sequence[Passage],
        max_words: int | None = None,
        max_tokens: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> list[ChatMessage]:
        """System message (if any) and the single user turn."""
        if max_tokens is not None and tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer")
        n = len(passages)
        words = self.default_max_words(n) if max_words is None else max_words
        q = replace_bracket_numbers(query)
        if self.strip_query:
            q = q.strip()
        parts = [
            f"I will provide you with {n} passages, each indicated by {self.identifier_phrase} []. "
            f"Rank the passages based on their relevance to the search query: {q}.\n"
        ]
        if self.blank_line_after_prefix:
            parts.append("\n")
        for i, passage in enumerate(passages):
            content = self.format_passage(passage, words)
            if max_tokens is not None and tokenizer is not None:
                content = cut_tokens(content, max_tokens, tokenizer)
            parts.append(f"[{identifier(i, self.identifier)}] {content}\n")
        parts.append(
            f"Search Query: {q}.\n"
            f"Rank the {n} passages above based on their relevance to the search query. "
            "All the passages should be included and listed using identifiers, in descending order of "
            f"relevance. The output format should be [] > [], e.g., {self.example_ordering}, {self.closing}"
        )
        messages = []
        if self.system_message:
            messages.append(ChatMessage(role="system", content=self.system_message))
        messages.append(ChatMessage(role="user", content="".join(parts)))
        return messages

    def output_budget(self, n: int, tokenizer: Tokenizer | None = None) -> int:
        """Tokens of ``[1] > ... > [n]`` / ``[A] > ...`` (exact with a tokenizer, else an upper estimate)."""
        if tokenizer is not None:
            return exact_output_tokens(n, self.identifier, tokenizer)
        return estimate_output_tokens(n, self.identifier)


RANK_ZEPHYR = SingleTurnTemplate(
    name="rank_zephyr",
    identifier="numeric",
    system_message=RANK_LLM_SYSTEM,
    identifier_phrase="a numerical identifier",
    example_ordering="[2] > [1]",
    closing=CLOSING_CURRENT,
    blank_line_after_prefix=False,
)

RANK_ZEPHYR_ALPHA = SingleTurnTemplate(
    name="rank_zephyr_alpha",
    identifier="alpha",
    system_message=RANK_LLM_SYSTEM,
    identifier_phrase="an alphabetical identifier",
    example_ordering="[B] > [A]",
    closing=CLOSING_CURRENT,
    blank_line_after_prefix=False,
)

RANK_ZEPHYR_LEGACY = SingleTurnTemplate(
    name="rank_zephyr_legacy",
    identifier="numeric",
    system_message=RANK_LLM_SYSTEM + ".",
    identifier_phrase="a numerical identifier",
    example_ordering="[2] > [1]",
    closing=CLOSING_LEGACY,
    blank_line_after_prefix=True,
    scale_words_by_window=True,
)

FIRST = SingleTurnTemplate(
    name="first",
    identifier="alpha",
    system_message=RANK_LLM_SYSTEM + ".",
    identifier_phrase="a alphabetical identifier",
    example_ordering="[B] > [A]",
    closing=CLOSING_LEGACY,
    blank_line_after_prefix=True,
    scale_words_by_window=True,
)

FULLRANK = SingleTurnTemplate(
    name="fullrank",
    identifier="numeric",
    system_message=RANK_LLM_SYSTEM + ".",
    identifier_phrase="a numerical identifier",
    example_ordering="[2] > [1]",
    closing=CLOSING_LEGACY,
    blank_line_after_prefix=True,
    max_words=100,
    strip_query=True,
)
