"""The parts of the ``vllm`` engine that depend on the installed vLLM's version or platform."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["logprobs_mode", "on_cpu", "supports_logprob_token_ids", "tokens_prompt"]


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def supports_logprob_token_ids() -> bool:
    import dataclasses

    from vllm import SamplingParams

    if dataclasses.is_dataclass(SamplingParams):
        return any(f.name == "logprob_token_ids" for f in dataclasses.fields(SamplingParams))
    return "logprob_token_ids" in getattr(SamplingParams, "__annotations__", {}) or hasattr(
        SamplingParams, "logprob_token_ids"
    )


def tokens_prompt(ids: list[int]) -> Any:
    """vLLM's token-id prompt: a rendered ``TokensInput`` where available (vLLM >= 0.2x), else
    the older ``TokensPrompt`` dict."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


def logprobs_mode(logprobs_mode: str) -> Literal["token_ids", "top_k"]:
    """The logprobs mode to use (``auto``: ``token_ids`` where this vLLM has it)."""
    if logprobs_mode == "auto":
        return "token_ids" if supports_logprob_token_ids() else "top_k"
    if logprobs_mode == "token_ids":
        if not supports_logprob_token_ids():
            raise ValueError("this vLLM has no SamplingParams.logprob_token_ids; use logprobs_mode='top_k'")
        return "token_ids"
    if logprobs_mode == "top_k":
        return "top_k"
    raise ValueError(f"logprobs_mode must be auto, token_ids or top_k, got {logprobs_mode!r}")
