"""Adapter from a Hugging Face tokenizer to :class:`rerankd.types.Tokenizer` (no torch needed).

Used by every engine that budgets with the model's own tokenizer (``hf``, ``vllm``, ``openai``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerankd.types import ChatMessage

__all__ = ["HFTokenizer"]


class HFTokenizer:
    """Adapter from a transformers tokenizer to :class:`rerankd.types.Tokenizer`."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` (no special tokens) and each token's ``[start, end)`` characters."""
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept, no clean-up of spaces)."""
        return str(self.hf.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to ``messages``, as text."""
        if not getattr(self.hf, "chat_template", None):
            raise ValueError(f"tokenizer {self.hf.name_or_path!r} has no chat template; use an instruct/chat model")
        out = self.hf.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(out)

    def render_for_generation(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt to generate from: continues a final assistant message, else adds the generation prompt."""
        if messages and messages[-1].role == "assistant":  # continue a prefilled answer
            out = self.hf.apply_chat_template(
                [m.model_dump() for m in messages], tokenize=False, continue_final_message=True
            )
            return str(out)
        return self.render_chat(messages, add_generation_prompt=True)

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the rendered chat prompt (with the generation prompt)."""
        return len(self.encode(self.render_chat(messages, add_generation_prompt=True)))

    @property
    def vocab_size(self) -> int:
        return len(self.hf)
