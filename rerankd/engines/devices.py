"""``--device`` and ``--dtype`` values, checked without torch (engines resolve them with it)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["DTYPES", "check_device", "check_dtype", "with_device"]

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


def with_device(
    options: Mapping[str, Any],
    device: str | None,
    dtype: str | None,
    *,
    flags: Mapping[str, str],
    options_flag: str,
) -> dict[str, Any]:
    """``options`` plus ``device`` and ``dtype`` (checked; ``None``: not set), which must agree with
    the options' own ``device``/``dtype``.  ``flags`` (``{"device": "--device", ...}``) and
    ``options_flag`` name where each came from in the ``ValueError``."""
    merged = dict(options)
    for key, value, check in (("device", device, check_device), ("dtype", dtype, check_dtype)):
        if value is None:
            continue
        try:
            value = check(value)
        except ValueError as e:
            raise ValueError(f"{flags[key]}: {e}") from None
        if key in merged and str(merged[key]).strip().lower() != value:
            raise ValueError(f"{flags[key]}={value} contradicts {options_flag} {key}={merged[key]}")
        merged[key] = value
    return merged
