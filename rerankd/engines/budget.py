"""Prompt-length checks and the output-budget clamp shared by every engine.

A prompt runs only if it leaves room for at least one generated token: servers (vLLM, and
OpenAI-compatible APIs) reject a prompt whose length equals the context, and a next-token
logprob request generates one token too.  So for a context of ``C`` tokens a prompt may have
at most ``C - 1`` tokens, and generation gets ``min(max_tokens, C - prompt)`` tokens.
"""

from __future__ import annotations

__all__ = ["LOGPROBS_OUTPUT_TOKENS", "check_max_tokens", "check_prompt_fits", "output_budget"]

LOGPROBS_OUTPUT_TOKENS = 1
"""Tokens a next-token logprob request generates (what its prompt must leave room for)."""


def check_max_tokens(max_tokens: int) -> None:
    """An output budget must allow at least one token."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")


def check_prompt_fits(index: int, prompt_tokens: int, context_size: int, model: str) -> int:
    """Room left for output after prompt ``index`` of ``prompt_tokens``; a ``ValueError`` naming
    the limit when the prompt is empty or leaves no room for one generated token."""
    room = context_size - prompt_tokens
    if prompt_tokens < 1 or room < 1:
        raise ValueError(
            f"prompt {index} has {prompt_tokens} tokens; the context size of {model} is {context_size}, "
            f"so a prompt may have at most {context_size - 1} tokens (truncate the passages)"
        )
    return room


def output_budget(index: int, prompt_tokens: int, max_tokens: int, context_size: int, model: str) -> int:
    """``max_tokens`` clamped to what the context leaves after prompt ``index``."""
    return min(max_tokens, check_prompt_fits(index, prompt_tokens, context_size, model))
