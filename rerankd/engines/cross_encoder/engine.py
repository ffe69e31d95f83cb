"""The ``cross_encoder`` engine: a transformers sequence-classification model scoring
(query, passage) pairs in batches, on CPU or GPU: the engine of distilled students.

It has one capability, ``score`` (:class:`~rerankd.engines.base.PairScorer`), served by the
``pointwise`` strategy; it neither generates nor exposes attention.  Pairs run on one worker
thread of their own, ``max_batch_size`` at a time, so the event loop never blocks on the model
and many queries share the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.cross_encoder.student import check_cross_encoder_folder
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.models.provision import resolve_model
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = ["CrossEncoderEngine"]

logger = logging.getLogger(__name__)


class CrossEncoderEngine:
    """A one-output cross-encoder: ``await engine.score_pairs(query, passages)``."""

    name = "cross_encoder"
    capabilities: frozenset[Capability] = frozenset({Capability.SCORE})

    def __init__(self, hf_model: Any, tokenizer: Any, *, model: str, max_length: int, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.hf_model = hf_model.eval()
        self.hf_tokenizer = tokenizer
        self.tokenizer: Tokenizer = HFTokenizer(tokenizer)
        self.model = model
        self.max_length = int(max_length)
        self.context_size = self.max_length
        self.max_batch_size = max_batch_size
        self.device: torch.device = next(hf_model.parameters()).device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerankd-ce")
        self._closed = False

    @classmethod
    def load(
        cls,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int | None = None,
        max_batch_size: int = 32,
    ) -> CrossEncoderEngine:
        """Load a student folder, a registered student name or any one-output cross-encoder folder.

        ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; ``dtype``:
        ``auto`` (float32 on CPU, the GPU's half type on CUDA) or a dtype name; ``max_length``:
        tokens per pair (default: the model's position limit, at most 512); ``max_batch_size``:
        pairs per forward pass.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rerankd.engines.hf.device import resolve_device as _resolve_device
        from rerankd.engines.hf.device import resolve_dtype as _resolve_dtype

        path = resolve_model(model)
        check_cross_encoder_folder(path)
        torch_device = _resolve_device(device)
        torch_dtype = (
            torch.float32 if dtype == "auto" and torch_device.type == "cpu" else _resolve_dtype(dtype, torch_device)
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model: Any = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype).to(torch_device)
        native = int(getattr(hf_model.config, "max_position_embeddings", 512) or 512)
        limit = min(native, 512) if max_length is None else int(max_length)
        if limit > native:
            raise ValueError(f"max_length {limit} exceeds the model's {native} positions")
        logger.info("loaded cross-encoder %s from %s on %s (%s)", model, path, torch_device, torch_dtype)
        return cls(hf_model, tokenizer, model=model, max_length=limit, max_batch_size=max_batch_size)

    # ----------------------------------------------------------------- scoring

    async def score_pairs(self, query: str, passages: Sequence[str], max_length: int | None = None) -> list[float]:
        """The model's logit for each (query, passage) pair, in passage order."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if not passages:
            return []
        limit = min(self.max_length, max_length) if max_length else self.max_length
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score, query, list(passages), limit)

    def _score(self, query: str, passages: list[str], max_length: int) -> list[float]:
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(passages), self.max_batch_size):
                chunk = passages[start : start + self.max_batch_size]
                enc = self.hf_tokenizer(
                    [query] * len(chunk),
                    chunk,
                    padding=True,
                    truncation="longest_first",
                    max_length=max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.hf_model(**enc).logits
                out.extend(float(x) for x in logits[:, 0].float().cpu())
        return out

    # ----------------------------------------------------------------- not an LLM

    def _lacks(self, what: str) -> CapabilityError:
        return CapabilityError(f"engine 'cross_encoder' only scores pairs (capability 'score'); it cannot {what}")

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        raise self._lacks("generate")

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        raise self._lacks("return next-token logprobs")

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        raise self._lacks("return attention")

    async def aclose(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False)
