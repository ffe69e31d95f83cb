"""GGUF -> safetensors conversion of a bundled model (once, into the cache): transformers reads
the GGUF (de-quantized), the weights are saved as a normal Hugging Face folder."""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from rerankd.models.errors import ProvisionError

if TYPE_CHECKING:
    import torch

__all__ = ["convert_gguf"]

logger = logging.getLogger(__name__)


def convert_gguf(gguf: Path, out_dir: Path, dtype: torch.dtype | None = None, *, progress: bool = True) -> None:
    """Convert a GGUF checkpoint into a plain safetensors Hugging Face folder (bf16 by default).

    The GGUF is dequantized by transformers; since a GGUF-loaded model is not a normal
    checkpoint, the weights are copied into a model built from its config (without any
    ``quantization_config``) before saving.  The tokenizer and its chat template come
    from the GGUF metadata.
    """
    with contextlib.ExitStack() as stack:
        if not progress:
            stack.enter_context(_quiet_transformers())
        _convert(gguf, out_dir, dtype)
    for path in out_dir.iterdir():  # some writers create files readable by the owner only
        path.chmod(0o644)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' progress bars, including the GGUF one (a plain tqdm)."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils: Any
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - layout of another transformers version
        gguf_utils = None
    saved = getattr(gguf_utils, "tqdm", None)
    if gguf_utils is not None and saved is not None:
        gguf_utils.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_utils is not None and saved is not None:
            gguf_utils.tqdm = saved
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _convert(gguf: Path, out_dir: Path, dtype: torch.dtype | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    dtype = dtype if dtype is not None else torch.bfloat16
    src_dir, name = str(gguf.parent), gguf.name
    src = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, quantization_config=GgufConfig(dequantize=True))
    cfg = copy.deepcopy(src.config)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.dtype = dtype
    dst = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    dst.load_state_dict(src.state_dict(), strict=True)
    dst.generation_config = copy.deepcopy(src.generation_config)
    del src
    gc.collect()

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    _align_eos(dst, tok)
    dst.save_pretrained(out_dir)
    del dst
    gc.collect()
    tok.save_pretrained(out_dir)

    template = getattr(tok, "chat_template", None)
    if template is None:
        logger.warning("%s carries no chat template; chat prompts will fail with this model", name)
    else:
        reloaded = AutoTokenizer.from_pretrained(out_dir).chat_template
        if reloaded != template:
            raise ProvisionError(f"the chat template of {name} was not preserved in {out_dir}")


def _align_eos(model: Any, tok: Any) -> None:
    """Make generation stop at the tokenizer's end-of-turn token as well as the model's eos."""
    gen = model.generation_config
    eos = gen.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    if ids:
        gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else ids[0] if ids else None


# --------------------------------------------------------------------------- pull
