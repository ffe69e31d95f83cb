"""``--device``/``--dtype`` values resolved to torch objects (the hf and cross_encoder engines)."""

from __future__ import annotations

import logging

import torch

from rerankd.engines.devices import check_device, check_dtype

__all__ = ["cpu_has_native_bf16", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when present, else MPS, else CPU; logged), ``cpu``, ``cuda``, ``cuda:N``."""
    device = check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = torch.device("mps")
        else:
            chosen = torch.device("cpu")
        logger.info("device auto: %s (CUDA %s)", chosen, "present" if torch.cuda.is_available() else "absent")
        return chosen
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu or auto)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


# CPU flags that mean bfloat16 matmuls run natively (x86 AVX512-BF16 / AMX, Arm BF16); without
# them torch emulates bfloat16 and a forward pass runs several times slower than in float32.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (from ``/proc/cpuinfo``; False when unreadable)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and _NATIVE_BF16_FLAGS & set(value.split()):
            return True
    return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """A torch dtype. ``auto``: bfloat16 on GPUs (float16 where a CUDA device lacks bfloat16) and on
    CPUs with native bfloat16; float32 on other CPUs (emulated bfloat16 is several times slower)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = check_dtype(dtype)
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        if device.type == "cpu" and not cpu_has_native_bf16():
            logger.info("dtype auto: float32 (this CPU has no native bfloat16)")
            return torch.float32
        return torch.bfloat16
    return _DTYPES[name]
