"""Test engines that worker subprocesses load by import path (``RERANKD_ENGINE=tests.support.engines:...``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from rerankd.engines.base import Capability, Engine
from rerankd.types import ChatMessage, ContextAttention, Generation
from tests.support.scripted_engine import WordTokenizer

SLEEP_ENGINE = "tests.support.engines:SleepEngine"
# An import path that names nothing: the worker must fail at start-up, clearly.
NO_SUCH_ENGINE = "tests.support.engines:NoSuchEngine"
SCORING_ENGINE = "tests.support.engines:ScoringOnlyHF"


class SleepEngine:
    """Test engine: sleeps ``N`` seconds when the prompt holds ``sleep=N``, then answers nothing
    (the strategy keeps the first-stage order).  Loaded by workers as
    ``RERANKD_ENGINE=tests.support.engines:SleepEngine`` (:data:`SLEEP_ENGINE`)."""

    name = "sleep"
    capabilities = frozenset({Capability.GENERATE})
    context_size = 100_000

    def __init__(self, model: str = "slow", **_: Any) -> None:
        self.model = model
        self.tokenizer = WordTokenizer()

    @classmethod
    def load(cls, model: str, **options: Any) -> SleepEngine:
        return cls(model, **options)

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        text = "\n".join(m.content for p in prompts for m in p)
        m = re.search(r"sleep=([0-9.]+)", text)
        if m:
            await asyncio.sleep(float(m.group(1)))
        return [Generation(text="", prompt_tokens=1, completion_tokens=0) for _ in prompts]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise NotImplementedError

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class ScoringOnlyHF:
    """The hf engine on the tiny model, without its ``generate`` capability: what vLLM with
    ``attention=only`` is (attention and logprobs from one pooling model, no decoding)."""

    @classmethod
    def load(cls, model: str, **options: Any) -> Engine:
        from rerankd.engines.factory import load_engine

        engine = load_engine("hf", model, **options)
        engine.capabilities = engine.capabilities - {Capability.GENERATE}
        return engine
