"""Placeholder (replaced below)."""

from __future__ import annotations

from collections.abc import Sequence

from rerankd.engines.base import Capability
from rerankd.types import ChatMessage, ContextAttention, Generation


class _WordTokenizer:
    def encode(self, text: str) -> list[int]:
        return [hash(w) % 50_000 for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(i) for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m.role}>\n{m.content}\n" for m in messages) + (
            "<assistant>\n" if add_generation_prompt else ""
        )

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 2 for m in messages)


class EchoEngine:
    name = "echo"
    capabilities = frozenset({Capability.GENERATE})
    context_size = 1_000_000

    def __init__(self, model: str = "echo", **_: object) -> None:
        self.model = model
        self.tokenizer = _WordTokenizer()

    @classmethod
    def load(cls, model: str, **options: object) -> EchoEngine:
        return cls(model, **options)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        return [Generation(text="", prompt_tokens=0, completion_tokens=0) for _ in prompts]

    async def next_token_logprobs(
        self, prompts: Sequence[str], token_ids: Sequence[int]
    ) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(self, context: str, suffixes: Sequence[str]) -> ContextAttention:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
