"""`rerankd rerank` refuses flags that would be ignored in the chosen mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"qid": "1", "query": "q", "candidates": [{"docid": "a", "text": "x"}]}) + "\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--queue", "--engine", "hf"], "--engine does not apply with --queue"),
        (["--api-url", "http://127.0.0.1:9"], "--api-url only applies with --queue"),
        (["--api-key", "k"], "--api-key only applies with --queue"),
    ],
)
def test_flags_that_do_not_apply_are_errors(
    queries: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.delenv("RERANKD_API_URL", raising=False)
    monkeypatch.delenv("RERANKD_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["rerank", str(queries), "-o", str(tmp_path / "run.trec"), *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "run.trec.journal.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "foo"], "--strategy 'foo' is not a strategy; choose one of sliding_window"),
        (["--strategy", "first", "-p", "stride=0"], "stride must be between 1 and window_size (20), got 0"),
        (["--strategy", "icr", "-p", "bogus=1"], "'bogus' is not a setting of strategy 'icr'"),
    ],
)
def test_bad_strategy_settings_name_what_is_wrong(
    queries: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["rerank", str(queries), "-o", str(tmp_path / "run.trec"), *extra])
    assert result.exit_code != 0
    assert message in result.output
    assert ": :" not in result.output and "Error: :" not in result.output
    assert "Input tag" not in result.output  # pydantic's own wording stays inside
