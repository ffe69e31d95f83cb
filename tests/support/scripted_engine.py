"""A scripted engine for strategy unit tests: it "reads" the relevance that each test
passage carries in its text (``rel=N``) and answers like a perfect reranker would.
Integration tests use real models; this only drives strategy logic deterministically."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rerankd.engines.base import Capability
from rerankd.types import ChatMessage, ContextAttention, Generation

_PASSAGE = re.compile(r"\[(\d+|[A-Z])\][^\[]*?rel=(\d+)")


class WordTokenizer:
    """Whitespace tokens; ids are stable per word.  Letters are single tokens."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.inv: dict[int, str] = {}

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            if w not in self.vocab:
                self.vocab[w] = len(self.vocab)
                self.inv[self.vocab[w]] = w
            ids.append(self.vocab[w])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.inv[i] for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        out = "".join(f"<{m.role}>\n{m.content}\n" for m in messages)
        return out + ("<assistant>\n" if add_generation_prompt else "")

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.encode(self.render_chat(messages)))


def passages_in(text: str) -> list[tuple[str, int]]:
    """(identifier, rel) pairs of the passages in a rendered prompt, in prompt order."""
    return [(ident, int(rel)) for ident, rel in _PASSAGE.findall(text)]


class ScriptedEngine:
    name = "scripted"
    model = "scripted-oracle"

    def __init__(
        self,
        context_size: int = 100_000,
        capabilities: frozenset[Capability] = frozenset(Capability),
        respond: Callable[[str], str] | None = None,
    ) -> None:
        self.context_size = context_size
        self.capabilities = capabilities
        self.tokenizer = WordTokenizer()
        self.respond = respond
        self.generate_calls = 0
        self.logprob_calls = 0
        self.prompts: list[str] = []
        self.max_tokens: list[int] = []

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        out = []
        self.max_tokens.append(max_tokens)
        for msgs in prompts:
            self.generate_calls += 1
            text = "\n".join(m.content for m in msgs)
            self.prompts.append(text)
            if self.respond is not None:
                answer = self.respond(text)
            else:
                ranked = sorted(passages_in(text), key=lambda p: -p[1])
                answer = " > ".join(f"[{ident}]" for ident, _ in ranked)
            out.append(
                Generation(
                    text=answer, prompt_tokens=self.tokenizer.count_chat(msgs), completion_tokens=len(answer.split())
                )
            )
        return out

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        out = []
        for p in prompts:
            self.logprob_calls += 1
            self.prompts.append(p)
            rel = dict(passages_in(p))
            letters = [self.tokenizer.inv[t].removeprefix("[") for t in token_ids]  # "[A" or "A"
            out.append([-10.0 + 0.1 * rel.get(letter, 0) for letter in letters])
        return out

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
