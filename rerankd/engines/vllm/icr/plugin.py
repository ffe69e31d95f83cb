"""The ``vllm.general_plugins`` entry point: registers the ICR pooling architectures.

vLLM calls :func:`register` in every process it starts (the API process, engine cores and
workers).  With a vLLM version the plugin does not support it registers nothing and logs why;
the ``vllm`` engine then refuses ICR at start-up with :class:`UnsupportedVLLMVersion` (never
wrong scores from an unchecked version).
"""

from __future__ import annotations

import logging

from rerankd.engines.vllm.icr import ARCHITECTURES, UnsupportedVLLMVersion, check_vllm_version

logger = logging.getLogger(__name__)

MODEL_MODULE = "rerankd.engines.vllm.icr.model"


def register() -> None:
    """Register every ICR architecture with vLLM's ``ModelRegistry`` (lazily imported classes)."""
    try:
        check_vllm_version()
    except UnsupportedVLLMVersion as e:
        logger.warning("rerankd ICR plugin not registered: %s", e)
        return
    from vllm import ModelRegistry

    for arch in sorted(set(ARCHITECTURES.values())):
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, f"{MODEL_MODULE}:{arch}")
