"""``--device`` and ``--dtype`` values, checked without torch (engines resolve them with it)."""

from __future__ import annotations

import re

__all__ = ["DTYPES", "check_device", "check_dtype"]

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""``--dtype`` values (``auto``: the engine's choice for the device)."""
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def check_device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``), lower-cased; else a ``ValueError``."""
    device = str(value).strip().lower()
    if not _DEVICE.match(device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index), got {value!r}")
    return device


def check_dtype(value: str) -> str:
    """One of :data:`DTYPES` (aliases such as ``bf16`` accepted); else a ``ValueError``."""
    dtype = str(value).strip().lower()
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return dtype
