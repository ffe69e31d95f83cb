"""The engine protocol: what strategies may ask of an LLM backend."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer


class Capability(enum.StrEnum):
    GENERATE = "generate"
    LOGPROBS = "logprobs"
    ATTENTION = "attention"
    SCORE = "score"
    """(query, passage) pair scores from a cross-encoder (:class:`PairScorer`)."""


class CapabilityError(RuntimeError):
    """The engine cannot do what the strategy asks (e.g. attention on vLLM)."""


@runtime_checkable
class Engine(Protocol):
    """An LLM backend.  All methods are coroutines so many queries can share one engine."""

    name: str
    model: str
    capabilities: frozenset[Capability]
    context_size: int
    tokenizer: Tokenizer

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        """Greedy completions of chat prompts (one per prompt, same order)."""
        ...

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """For each raw (already templated) prompt, log-probabilities of ``token_ids``
        as the next token."""
        ...

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        """Attention from each suffix's tokens to the tokens of a shared ``context``
        (raw text, encoded once; its KV cache is reused for every suffix).

        ``layers=(start, end)`` sums only layers ``start <= l < end`` (0-based) and stops the
        forward pass after layer ``end - 1``; ``None`` means all layers."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class PairScorer(Protocol):
    """An engine with the ``score`` capability: a cross-encoder's relevance of each pair."""

    async def score_pairs(self, query: str, passages: Sequence[str], max_length: int | None = None) -> list[float]:
        """One score per passage (higher = more relevant), in passage order."""
        ...


def require(engine: Engine, capability: Capability, strategy: str) -> None:
    """Fail clearly when ``engine`` lacks what ``strategy`` needs."""
    if capability not in engine.capabilities:
        have = ", ".join(sorted(c.value for c in engine.capabilities)) or "none"
        raise CapabilityError(
            f"strategy {strategy!r} needs the {capability.value!r} capability, "
            f"which engine {engine.name!r} lacks (it has: {have})"
        )
