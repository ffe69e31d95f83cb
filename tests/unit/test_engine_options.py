"""Engine options: --device, --dtype and -e on the command line, RERANKD_* settings, and the
shared prompt budget of the engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.config import Settings
from rerankd.engines.budget import check_prompt_fits, output_budget
from rerankd.engines.devices import check_device, check_dtype
from rerankd.engines.options import (
    parse_options_text,
    validate_class_options,
    validate_engine_options,
)


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"qid": "1", "query": "q", "candidates": [{"docid": "a", "text": "x"}]}) + "\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "gpu"], "--device: device must be auto, cpu, cuda or cuda:N (N a GPU index), got 'gpu'"),
        (["--device", "cuda:x"], "got 'cuda:x'"),
        (["--dtype", "int8"], "--dtype: dtype must be one of auto, float32, bfloat16, float16, got 'int8'"),
        (["-e", "colour=red"], "unknown engine option 'colour' for engine 'hf'; accepted: attn_implementation, "),
        (["-e", "max_batch_size=many"], "engine option max_batch_size='many' is not valid"),
        (["-e", "oops"], "-e expects key=value, got 'oops'"),
        (["--engine", "vllm", "--device", "cpu"], "unknown engine option 'device' for engine 'vllm'"),
        (["--engine", "openai", "-e", "top_logprobs=five"], "engine option top_logprobs='five' is not valid"),
        (["--device", "cpu", "-e", "device=cuda"], "--device=cpu contradicts -e device=cuda"),
        (["--queue", "--dtype", "float32"], "--device, --dtype and -e do not apply with --queue"),
    ],
)
def test_cli_engine_option_errors(queries: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["rerank", str(queries), "-o", str(tmp_path / "run.trec"), *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run.trec.journal.jsonl").exists()


def test_values_are_converted_to_the_settings_types() -> None:
    assert validate_engine_options(
        "hf", {"max_batch_size": "16", "device": "CUDA:1", "dtype": "bf16", "batch_window_s": "0.01"}
    ) == {"max_batch_size": 16, "device": "cuda:1", "dtype": "bfloat16", "batch_window_s": 0.01}
    assert validate_engine_options("openai", {"top_logprobs": "5"}) == {"top_logprobs": 5}
    assert check_device("auto") == "auto" and check_dtype("fp16") == "float16"


def test_dotted_engine_classes_are_checked_against_their_loader() -> None:
    class Custom:
        @classmethod
        def load(cls, model: str, depth: int = 1) -> Custom:
            return cls()

    assert validate_class_options(Custom, {"depth": "3"}) == {"depth": 3}
    with pytest.raises(ValueError, match="unknown engine option 'width' for engine 'Custom'; accepted: depth"):
        validate_class_options(Custom, {"width": 2})


def test_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_ENGINE_OPTIONS", "max_batch_size=4, batch_window_s=0.01")
    monkeypatch.setenv("RERANKD_DEVICE", "CPU")
    monkeypatch.setenv("RERANKD_DTYPE", "float32")
    s = Settings()
    assert s.engine_options_with_device() == {
        "max_batch_size": "4",
        "batch_window_s": "0.01",
        "device": "cpu",
        "dtype": "float32",
    }
    monkeypatch.setenv("RERANKD_ENGINE_OPTIONS", '{"dtype": "bfloat16"}')
    with pytest.raises(ValueError, match="RERANKD_DTYPE=float32 contradicts RERANKD_ENGINE_OPTIONS dtype=bfloat16"):
        Settings().engine_options_with_device()
    monkeypatch.setenv("RERANKD_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        Settings()
    assert parse_options_text("") == {}
    with pytest.raises(ValueError, match="RERANKD_ENGINE_OPTIONS is not valid JSON"):
        parse_options_text("{oops")


def test_prompt_budget_leaves_room_for_one_token() -> None:
    assert check_prompt_fits(0, 99, 100, "m") == 1
    assert output_budget(0, 90, 64, 100, "m") == 10
    with pytest.raises(ValueError, match=r"prompt 3 has 100 tokens; .* is 100, so a prompt may have at most 99"):
        check_prompt_fits(3, 100, 100, "m")
    with pytest.raises(ValueError, match="prompt 0 has 0 tokens"):
        check_prompt_fits(0, 0, 100, "m")
