"""RankGPT's multi-turn permutation prompt (Sun et al., 2023).

Source: github.com/sunnweiwei/RankGPT, ``rank_gpt.py`` (commit 0d62bc38): ``get_prefix_prompt``,
``get_post_prompt`` and ``create_permutation_instruction``, with the passage text that
``run_retriever`` builds.  Note the space before both ``\\n`` in the instructions, which
rank_llm's later ``rank_gpt_template.yaml`` dropped.
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
from rerankd.prompts.text import cut_tokens, cut_words
from rerankd.types import ChatMessage, Tokenizer

RANK_GPT_SYSTEM = (
    "You are RankGPT, an intelligent assistant that can rank passages based on their relevancy to the query."
)


@dataclass(frozen=True)
class RankGPTTemplate:
    """RankGPT: system message, prefix turn, one user/assistant turn pair per passage, post prompt.

    Passages are ``Title: {title} Content: {text}`` when titled, whitespace-collapsed and cut
    to ``max_words`` words (300).  Unlike rank_llm, ``[n]`` inside passages and the query is
    left as is and no ftfy cleaning is done.
    """

    name: str = "rank_gpt"
    identifier: IdentifierKind = "numeric"
    max_words: int = 300

    def default_max_words(self, n: int) -> int:
        """RankGPT's fixed ``max_length = 300`` words."""
        return self.max_words

    def format_passage(self, passage: Passage, max_words: int) -> str:
        """``run_retriever``'s title join and whitespace collapse, then the instruction's cleaning."""
        if passage.title is not None:
            content = "Title: " + passage.title + " " + "Content: " + passage.text
        else:
            content = passage.text
        content = " ".join(content.split())
        content = content.replace("Title: Content: ", "").strip()
        return cut_words(content, max_words)

    def render(
        self,
        query: str,
        passages: Sequence[Passage],
        max_words: int | None = None,
        max_tokens: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> list[ChatMessage]:
        """``create_permutation_instruction`` as chat messages."""
        if max_tokens is not None and tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer")
        n = len(passages)
        words = self.default_max_words(n) if max_words is None else max_words
        messages = [
            ChatMessage(role="system", content=RANK_GPT_SYSTEM),
            ChatMessage(
                role="user",
                content=(
                    f"I will provide you with {n} passages, each indicated by number identifier []. \n"
                    f"Rank the passages based on their relevance to query: {query}."
                ),
            ),
            ChatMessage(role="assistant", content="Okay, please provide the passages."),
        ]
        for i, passage in enumerate(passages):
            ident = identifier(i, self.identifier)
            content = self.format_passage(passage, words)
            if max_tokens is not None and tokenizer is not None:
                content = cut_tokens(content, max_tokens, tokenizer)
            messages.append(ChatMessage(role="user", content=f"[{ident}] {content}"))
            messages.append(ChatMessage(role="assistant", content=f"Received passage [{ident}]."))
        messages.append(
            ChatMessage(
                role="user",
                content=(
                    f"Search Query: {query}. \n"
                    f"Rank the {n} passages above based on their relevance to the search query. "
                    "The passages should be listed in descending order using identifiers. "
                    "The most relevant passages should be listed first. "
                    "The output format should be [] > [], e.g., [1] > [2]. "
                    "Only response the ranking results, do not say any word or explain."
                ),
            )
        )
        return messages

    def output_budget(self, n: int, tokenizer: Tokenizer | None = None) -> int:
        """Tokens of ``[1] > [2] > ... > [n]`` (exact with a tokenizer, else an upper estimate)."""
        if tokenizer is not None:
            return exact_output_tokens(n, self.identifier, tokenizer)
        return estimate_output_tokens(n, self.identifier)
