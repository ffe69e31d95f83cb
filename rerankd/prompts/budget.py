"""Fit a rendered prompt into a model's context by cutting passages, never the instructions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from rerankd.prompts.base import Passage, PromptTemplate
from rerankd.types import ChatMessage, Tokenizer

logger = logging.getLogger(__name__)


class PromptTooLongError(ValueError):
    """Even with every passage emptied the prompt leaves no room for the output budget."""


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt that fits: ``prompt_tokens <= context_size - output_budget``.

    ``max_words`` is the word cut applied to every passage; ``max_tokens`` the per-passage
    token cut the budget had to add (``None`` when none was needed, then ``truncated`` is False).
    """

    messages: list[ChatMessage]
    prompt_tokens: int
    truncated: bool
    max_words: int
    max_tokens: int | None


def fit_prompt(
    template: PromptTemplate,
    query: str,
    passages: Sequence[Passage],
    tokenizer: Tokenizer,
    context_size: int,
    output_budget: int,
    max_words: int | None = None,
) -> FittedPrompt:
    """Render ``template`` so that ``tokenizer.count_chat(messages) <= context_size - output_budget``.

    Passages first get the template's own word cut (``max_words``, default
    ``template.default_max_words(n)``).  If the prompt is still too long, a per-passage token
    cap is binary-searched: the largest cap (done with ``tokenizer.encode``/``decode``) whose
    prompt fits.  Passages shorter than the cap stay whole; the instruction text is never cut.
    Raises :class:`PromptTooLongError` when even empty passages do not fit.
    """
    if context_size <= 0:
        raise ValueError(f"context_size must be positive, got {context_size}")
    if output_budget < 0:
        raise ValueError(f"output_budget must be >= 0, got {output_budget}")
    limit = context_size - output_budget
    words = template.default_max_words(len(passages)) if max_words is None else max_words

    messages = template.render(query, passages, max_words=words)
    tokens = tokenizer.count_chat(messages)
    if tokens <= limit:
        return FittedPrompt(messages, tokens, truncated=False, max_words=words, max_tokens=None)

    empty = template.render(query, passages, max_words=words, max_tokens=0, tokenizer=tokenizer)
    min_tokens = tokenizer.count_chat(empty)
    if min_tokens > limit or not passages:
        raise PromptTooLongError(
            f"prompt does not fit: context size {context_size} minus output budget {output_budget} "
            f"leaves {limit} prompt tokens, but the minimum prompt length (every passage emptied) "
            f"is {min_tokens} tokens for {len(passages)} passages with template {template.name!r}"
        )

    # Invariant: cap `lo` fits, cap `hi` does not (at the longest passage's length nothing is cut).
    lo, hi = 0, max(len(tokenizer.encode(template.format_passage(p, words))) for p in passages)
    best_messages, best_tokens = empty, min_tokens
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = template.render(query, passages, max_words=words, max_tokens=mid, tokenizer=tokenizer)
        count = tokenizer.count_chat(candidate)
        if count <= limit:
            lo, best_messages, best_tokens = mid, candidate, count
        else:
            hi = mid
    logger.debug(
        "template %s: %d passages cut to %d tokens each (%d prompt tokens, limit %d)",
        template.name,
        len(passages),
        lo,
        best_tokens,
        limit,
    )
    return FittedPrompt(best_messages, best_tokens, truncated=True, max_words=words, max_tokens=lo)
