"""GPU memory of the ``vllm`` engine: how its vLLM engines share one GPU, checked before any starts.

A ``vllm`` engine runs up to ``1 + attention_max_models`` vLLM engines in one process: the
generation engine and one ICR attention (pooling) engine per early-exit depth, the full-depth
one included.  Each takes its own share of the GPU (``gpu_memory_utilization``: weights,
activations and KV cache; each holds its own copy of the weights).

vLLM 0.32's rule (``vllm/v1/worker/utils.py``, ``request_memory``; called by the GPU worker's
``init_device`` after its CUDA context and NCCL are up): an engine starts only if
``ceil(utilization x total) <= free``, ``free`` being the device's free memory at that moment;
else "Free memory on device ... is less than desired GPU memory utilization".  The engines
start one after another, so each later one finds the memory the earlier ones took (their share,
which their KV cache fills, plus their CUDA context) gone.  :func:`check_shares` plays that
sequence with the numbers measured before the first engine starts and refuses, naming the
settings, a configuration in which any engine would be refused.

Defaults (:func:`plan_shares`): one budget (``gpu_memory_budget``, 0.9 like vLLM's default
utilization) split into parts: :data:`GENERATION_PARTS` for the generation engine, one per
attention engine: 0.45 + 0.225 + 0.225 with ``attention_max_models=2``.  A share given
explicitly is kept; the other takes what is left of the budget.  Torch-free and vLLM-free, but
:func:`measure_gpu_memory` (a child process asks torch).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_GPU_MEMORY_BUDGET",
    "ENGINE_CONTEXT_BYTES",
    "GENERATION_PARTS",
    "EngineShare",
    "GPUMemory",
    "GPUMemoryError",
    "SharePlan",
    "check_gpu_memory",
    "check_shares",
    "measure_gpu_memory",
    "plan_shares",
    "vllm_admits",
]

logger = logging.getLogger(__name__)

GIB = 1 << 30

DEFAULT_GPU_MEMORY_BUDGET = 0.9
"""The share of the GPU all vLLM engines of one ``vllm`` engine take together, by default."""

GENERATION_PARTS = 2
"""Parts of the budget the generation engine gets, against one per attention engine: it holds
the KV cache of every decoding request, an attention engine only that of the prompts of one step."""

ENGINE_CONTEXT_BYTES = GIB // 2
"""What an engine takes beyond its share: the CUDA context of its worker (and NCCL buffers),
created before vLLM measures the free memory, so not part of ``utilization x total``.  An
estimate (0.3-0.6 GiB on recent GPUs); the first engine's is in the measurement itself."""

AttentionMode = Literal["lazy", "eager", "only", "off"]


class GPUMemoryError(ValueError):
    """The vllm engine's GPU memory settings cannot fit the GPU (raised before any engine starts)."""


@dataclass(frozen=True)
class EngineShare:
    """One vLLM engine of the plan: what it is, the setting that gives its share, the share."""

    role: str
    setting: str
    share: float


@dataclass(frozen=True)
class SharePlan:
    """The GPU shares of a ``vllm`` engine's vLLM engines (``None``: that engine does not run)."""

    generation: float | None
    attention: float | None
    attention_engines: int
    budget: float

    def engines(self) -> list[EngineShare]:
        """Every engine that may run, in start order (the generation engine first)."""
        out = []
        if self.generation is not None:
            out.append(EngineShare("generation engine", f"gpu_memory_utilization={self.generation:g}", self.generation))
        if self.attention is not None:
            for i in range(self.attention_engines):
                out.append(
                    EngineShare(
                        f"ICR attention engine {i + 1} of attention_max_models={self.attention_engines}",
                        f"attention_gpu_memory_utilization={self.attention:g}",
                        self.attention,
                    )
                )
        return out

    @property
    def total(self) -> float:
        return sum(e.share for e in self.engines())


def _check_share(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise GPUMemoryError(f"{name} must be a fraction of GPU memory in (0, 1], got {value:g}")
    return value


def _floor(x: float) -> float:
    """Rounded down to 1e-3 (shares that add up to at most the budget, readable in logs)."""
    return math.floor(x * 1000 + 1e-9) / 1000


def plan_shares(
    *,
    attention: AttentionMode,
    attention_max_models: int,
    gpu_memory_budget: float = DEFAULT_GPU_MEMORY_BUDGET,
    gpu_memory_utilization: float | None = None,
    attention_gpu_memory_utilization: float | None = None,
) -> SharePlan:
    """The share of each engine: explicit settings as given, the others from the budget.

    ``attention='off'``: the generation engine alone (default: the whole budget);
    ``'only'``: attention engines alone (default: the budget split evenly); otherwise both,
    :data:`GENERATION_PARTS` parts for generation and one per attention engine.
    """
    budget = _check_share("gpu_memory_budget", gpu_memory_budget)
    if attention != "off" and attention_max_models < 1:
        raise GPUMemoryError(f"attention_max_models must be at least 1, got {attention_max_models}")
    gen = None if gpu_memory_utilization is None else _check_share("gpu_memory_utilization", gpu_memory_utilization)
    att = (
        None
        if attention_gpu_memory_utilization is None
        else _check_share("attention_gpu_memory_utilization", attention_gpu_memory_utilization)
    )
    plan = _split(attention, attention_max_models, budget, gen, att)
    for engine in plan.engines():
        if engine.share <= 0.0:  # vLLM refuses gpu_memory_utilization=0 (its config: gt=0)
            given = [("gpu_memory_utilization", gen), ("attention_gpu_memory_utilization", att)]
            explicit = "".join(f", {k}={v:g}" for k, v in given if v is not None)
            raise GPUMemoryError(
                f"the {engine.role} would get {engine.setting} (under 0.001 of the GPU) from "
                f"gpu_memory_budget={budget:g}{explicit}: raise gpu_memory_budget, lower "
                "attention_max_models or the explicit share, or set every share yourself"
            )
    return plan


def _split(attention: AttentionMode, n: int, budget: float, gen: float | None, att: float | None) -> SharePlan:
    """:func:`plan_shares` once its settings are checked."""
    if attention == "off":
        return SharePlan(
            generation=gen if gen is not None else budget, attention=None, attention_engines=0, budget=budget
        )
    if attention == "only":
        return SharePlan(
            generation=None,
            attention=att if att is not None else _floor(budget / n),
            attention_engines=n,
            budget=budget,
        )
    if gen is None and att is None:
        part = budget / (GENERATION_PARTS + n)
        return SharePlan(_floor(GENERATION_PARTS * part), _floor(part), n, budget)
    if att is None:
        assert gen is not None
        left = budget - gen
        if left < 0.001:  # nothing (or next to nothing) left
            raise GPUMemoryError(
                f"gpu_memory_utilization={gen:g} leaves nothing of gpu_memory_budget={budget:g} for the "
                f"attention_max_models={n} ICR attention engines: set attention_gpu_memory_utilization too, "
                "lower gpu_memory_utilization, or start with attention='off' (no ICR)"
            )
        return SharePlan(gen, _floor(left / n), n, budget)
    if gen is None:
        left = budget - n * att
        if left < 0.001:  # nothing (or next to nothing) left
            raise GPUMemoryError(
                f"attention_max_models={n} x attention_gpu_memory_utilization={att:g} leaves nothing of "
                f"gpu_memory_budget={budget:g} for the generation engine: set gpu_memory_utilization too, "
                "lower attention_gpu_memory_utilization or attention_max_models, or start with "
                "attention='only' (a scoring engine without generation)"
            )
        return SharePlan(_floor(left), att, n, budget)
    return SharePlan(gen, att, n, budget)


def vllm_admits(share: float, free_bytes: int, total_bytes: int) -> bool:
    """vLLM 0.32's start-up rule: ``ceil(total x gpu_memory_utilization) <= free``."""
    return math.ceil(total_bytes * share) <= free_bytes


@dataclass(frozen=True)
class GPUMemory:
    """Free and total memory of the tightest GPU the engines run on, as vLLM measures them."""

    free_bytes: int
    total_bytes: int
    device: str = "cuda:0"


def check_shares(plan: SharePlan, memory: GPUMemory, context_bytes: int = ENGINE_CONTEXT_BYTES) -> list[int]:
    """Start the plan's engines on paper, one after another, by vLLM's rule (:func:`vllm_admits`).

    ``memory.free_bytes`` is what the first engine finds; each engine then takes its share, and
    each later one first its CUDA context (``context_bytes``).  Returns the memory each engine
    finds free; raises :class:`GPUMemoryError` naming the settings and the numbers when one
    would be refused.
    """
    total, free = memory.total_bytes, memory.free_bytes
    engines = plan.engines()
    seen: list[int] = []
    lines: list[str] = []
    for i, engine in enumerate(engines):
        if i:
            free -= context_bytes
        requested = math.ceil(total * engine.share)
        if not vllm_admits(engine.share, free, total):
            lines.append(f"the {engine.role} ({engine.setting}) asks for {_gib(requested)} and finds {_gib(free)} free")
            fits = (memory.free_bytes - (len(engines) - 1) * context_bytes) / total
            raise GPUMemoryError(
                f"the vllm engine's GPU memory settings do not fit {memory.device} ({_gib(total)}, "
                f"{_gib(memory.free_bytes)} free before the first engine starts): vLLM starts an engine only "
                "if its share (utilization x total) is at most the memory free at its start, and the "
                f"engines start one after another: {'; '.join(lines)}. The {len(engines)} shares add up to "
                f"{plan.total:.3g}; with about {_gib(context_bytes)} per engine for its CUDA context, at most "
                f"{max(fits, 0):.3g} fits. Lower gpu_memory_budget (the total of the default shares) or the "
                "explicit shares, lower attention_max_models (one ICR attention engine per early-exit depth, "
                "the full depth included), free the GPU, or give the roles their own workers "
                "(attention='only' for scoring, attention='off' for generation)"
            )
        lines.append(f"the {engine.role} ({engine.setting}, {_gib(requested)}) leaves {_gib(free - requested)}")
        seen.append(free)
        free -= requested
    return seen


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


_PROBE = (
    "import json, sys, torch\n"
    "n = int(sys.argv[1])\n"
    "print(json.dumps([list(torch.cuda.mem_get_info(i)) for i in range(n)]))\n"
)


def measure_gpu_memory(devices: int = 1, timeout_s: float = 180.0) -> GPUMemory:
    """Free and total memory of the first ``devices`` visible GPUs, the tightest one, measured
    as vLLM's worker does (``torch.cuda.mem_get_info`` with a CUDA context of its own up) in a
    child process, so this process never holds a CUDA context of its own."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(devices)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=os.environ.copy(),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot measure GPU memory with torch: {out.stderr.strip()[-500:]}")
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    index = min(range(len(rows)), key=lambda i: rows[i][0])
    free, total = rows[index]
    return GPUMemory(free_bytes=int(free), total_bytes=int(total), device=f"cuda:{index}")


def check_gpu_memory(plan: SharePlan, devices: int) -> None:
    """Refuse, before any engine starts, GPU shares that vLLM would refuse (:func:`check_shares`
    on the measured GPUs); logs the plan.  GPUs whose memory cannot be measured are not checked
    (vLLM still checks each engine as it starts)."""
    try:
        memory = measure_gpu_memory(devices)
    except (OSError, RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        logger.warning("GPU memory not checked before the vllm engines start: %s", e)
        return
    check_shares(plan, memory)
    logger.info(
        "vllm GPU shares on %s (%.1f GiB free of %.1f): %s",
        memory.device, memory.free_bytes / GIB, memory.total_bytes / GIB,
        ", ".join(f"{e.role} {e.setting}" for e in plan.engines()),
    )  # fmt: skip
