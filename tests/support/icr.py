"""A stub attention engine (query_attention from a per-word table) and ICR requests for it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rerankd.engines.base import Capability
from rerankd.types import (
    Candidate,
    ChatMessage,
    ContextAttention,
    Generation,
    ICRConfig,
    Query,
    RerankRequest,
    Tokenizer,
)

_WORD = re.compile(r"\S+")


class WordTokenizer:
    """Tokens are whitespace-separated words."""

    def encode(self, text: str) -> list[int]:
        return [hash(w) % 1000 for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(map(str, ids))

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        out = "".join(f"<{m.role}>\n{m.content}\n</{m.role}>\n" for m in messages)
        return out + ("<assistant>\n" if add_generation_prompt else "")

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode(self.render_chat(messages)))


# word -> (attention from the real query, attention from the N/A query)
Table = dict[str, tuple[float, float]]


class StubAttentionEngine:
    """query_attention from a per-word table; every other token gets ``default``."""

    name = "stub"
    model = "stub-attention"

    def __init__(
        self,
        table: Table | None = None,
        context_size: int = 100_000,
        capabilities: frozenset[Capability] = frozenset({Capability.ATTENTION}),
        default: Callable[[str], tuple[float, float]] = lambda w: (0.0, 0.0),
    ) -> None:
        self.table = table or {}
        self.context_size = context_size
        self.capabilities = capabilities
        self.default = default
        self.tokenizer: Tokenizer = WordTokenizer()
        self.calls: list[tuple[str, list[str]]] = []

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        raise NotImplementedError

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        self.calls.append((context, list(suffixes)))
        tokens = list(_WORD.finditer(context))
        scores = []
        for suffix in suffixes:
            na = "Query: N/A" in suffix
            scores.append([self.table.get(m.group(), self.default(m.group()))[na] for m in tokens])
        n_suffix = sum(len(s.split()) for s in suffixes)
        return ContextAttention(
            token_offsets=[m.span() for m in tokens], scores=scores, prompt_tokens=len(tokens) + n_suffix
        )

    async def aclose(self) -> None:
        return None


def make_request(texts: Sequence[str], **cfg: Any) -> RerankRequest:
    cands = [Candidate(docid=f"d{i}", text=t) for i, t in enumerate(texts)]
    return RerankRequest(
        query=Query(qid="q", text="what is it"), candidates=cands, strategy=ICRConfig.model_validate(cfg)
    )
