"""What every prompt template shares: the passage view, identifiers and the template protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rerankd.types import ChatMessage, Tokenizer

IdentifierKind = Literal["numeric", "alpha"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Passage:
    """What a template sees of a candidate."""

    text: str
    title: str | None = None


def identifier(i: int, kind: IdentifierKind) -> str:
    """The identifier of the ``i``-th (0-based) passage: ``"1"``, ``"2"``... or ``"A"``, ``"B"``..."""
    if i < 0:
        raise ValueError(f"identifier index must be >= 0, got {i}")
    if kind == "numeric":
        return str(i + 1)
    if kind == "alpha":
        if i >= len(_ALPHABET):
            raise ValueError(f"alphabetic identifiers go up to Z (26 passages), got index {i}")
        return _ALPHABET[i]
    raise ValueError(f"unknown identifier kind {kind!r}; expected 'numeric' or 'alpha'")


def permutation_string(n: int, kind: IdentifierKind) -> str:
    """The full identity permutation of ``n`` ids as a model writes it: ``[1] > [2] > ...``."""
    return " > ".join(f"[{identifier(i, kind)}]" for i in range(n))


def estimate_output_tokens(n: int, kind: IdentifierKind) -> int:
    """Tokenizer-free upper estimate of :func:`permutation_string` tokens.

    Counts ``[``, ``]`` and `` >`` as one token each and every identifier character as a
    token (digit-by-digit tokenizers such as Llama's), plus 2 tokens of slack (e.g. EOS).
    """
    if n <= 0:
        return 0
    return sum(3 + len(identifier(i, kind)) for i in range(n)) + 2


def exact_output_tokens(n: int, kind: IdentifierKind, tokenizer: Tokenizer) -> int:
    """Tokens of :func:`permutation_string` with ``tokenizer`` (as rank_llm's ``num_output_tokens``)."""
    if n <= 0:
        return 0
    return len(tokenizer.encode(permutation_string(n, kind)))


@runtime_checkable
class PromptTemplate(Protocol):
    """A listwise ranking prompt: renders chat messages for one window of passages.

    ``render`` applies the template's own passage preprocessing (title formatting, the
    per-passage word cut, ...); ``max_tokens`` additionally cuts every passage to that many
    tokens of ``tokenizer`` (used by :func:`rerankd.prompts.budget.fit_prompt`).
    """

    @property
    def name(self) -> str: ...

    @property
    def identifier(self) -> IdentifierKind: ...

    def default_max_words(self, n: int) -> int:
        """The template's per-passage word cut for a window of ``n`` passages."""
        ...

    def format_passage(self, passage: Passage, max_words: int) -> str:
        """One passage's content as it appears after its identifier (no token cut)."""
        ...

    def render(
        self,
        query: str,
        passages: Sequence[Passage],
        max_words: int | None = None,
        max_tokens: int | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> list[ChatMessage]:
        """The chat messages; ``max_words=None`` means :meth:`default_max_words`."""
        ...

    def output_budget(self, n: int, tokenizer: Tokenizer | None = None) -> int:
        """Max new tokens for a full permutation of ``n`` ids (exact when given a tokenizer)."""
        ...
