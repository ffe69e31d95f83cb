"""Settings: environment, TOML file, aliases, API keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rerankd.config import Settings, env_names
from rerankd.jobs.routing import queue_name


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RERANKD_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()
    assert s.redis_url is None and s.store_url == "redis://127.0.0.1:6379/0"
    assert s.broker_url is None and s.celery_broker_url == s.store_url and not s.amqp
    assert s.model == "smollm2-135m-instruct" and s.engine == "hf"
    assert queue_name(s.key_prefix, s.model) == "rerankd.smollm2-135m-instruct" and s.worker_role == "auto"
    assert s.api_key_map() == {}
    assert s.visibility_timeout > s.job_deadline_s
    assert s.resolve_model(None) == (s.model, s.strategy)
    assert s.resolve_model("rerankd")[0] == s.model
    assert s.resolve_model(s.model)[0] == s.model


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_REDIS_URL", "redis://h:1/2")
    monkeypatch.setenv("RERANKD_API_KEYS", "alice:k1, bob:k2")
    monkeypatch.setenv("RERANKD_STRATEGY", '{"name": "first", "window_size": 10, "stride": 5}')
    monkeypatch.setenv("RERANKD_ALIASES", '{"fast": {"model": "m2", "strategy": {"name": "full_ranking"}}}')
    monkeypatch.setenv("RERANKD_ENGINE_OPTIONS", '{"device": "cuda"}')
    monkeypatch.setenv("RERANKD_MAX_DOCUMENTS", "12")
    s = Settings()
    assert s.store_url == s.celery_broker_url == "redis://h:1/2"
    assert s.api_key_map() == {"k1": "alice", "k2": "bob"}
    assert s.strategy.name == "first" and s.engine_options == {"device": "cuda"}
    model, strategy = s.resolve_model("fast")
    assert model == "m2" and strategy.name == "full_ranking"
    assert "m2" in s.served_models() and s.max_documents == 12


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "rerankd.toml"
    cfg.write_text(
        'model = "m1"\nmax_documents = 7\nkey_prefix = "from-file"\n'
        '[aliases.quick]\nmodel = "m1"\nstrategy = { name = "sliding_window", window_size = 4, stride = 2 }\n'
    )
    monkeypatch.setenv("RERANKD_CONFIG", str(cfg))
    monkeypatch.setenv("RERANKD_KEY_PREFIX", "from-env")
    s = Settings()
    assert s.model == "m1" and s.max_documents == 7 and s.key_prefix == "from-env"
    assert s.resolve_model("quick")[1].model_dump()["window_size"] == 4
    monkeypatch.setenv("RERANKD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="not a file"):
        Settings()


def test_unknown_model_names_the_known_ones() -> None:
    s = Settings(aliases={"a1": {"model": "x"}})  # type: ignore[arg-type]
    with pytest.raises(KeyError, match=r"unknown model 'nope'; known: .*a1.*rerankd"):
        s.resolve_model("nope")


def test_api_keys_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("# owners\ncarol:kc\n\ndave:kd\n")
    s = Settings(api_keys="alice:ka", api_keys_file=f)
    assert s.api_key_map() == {"ka": "alice", "kc": "carol", "kd": "dave"}
    with pytest.raises(ValueError, match="expected name:key"):
        Settings(api_keys="justakey").api_key_map()
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(api_keys_file=tmp_path / "nope")


def test_validation() -> None:
    with pytest.raises(ValidationError):
        Settings(max_documents=0)
    with pytest.raises(ValidationError):
        Settings(key_prefix="has space")
    with pytest.raises(ValidationError):
        Settings(strategy={"name": "sliding_window", "window_size": 4, "stride": 9})  # type: ignore[arg-type]


def test_env_names() -> None:
    names = env_names()
    assert {"RERANKD_REDIS_URL", "RERANKD_MODEL", "RERANKD_CONFIG", "RERANKD_MAX_DOCUMENTS"} <= names
    assert all(n.startswith("RERANKD_") and n.isupper() for n in names)


def test_unknown_settings_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_MAX_DOCUMENT", "5")
    with pytest.raises(
        ValueError, match="unknown environment variable RERANKD_MAX_DOCUMENT; did you mean RERANKD_MAX_DOCUMENTS"
    ):
        Settings()
    monkeypatch.delenv("RERANKD_MAX_DOCUMENT")
    monkeypatch.setenv("RERANKD_OPENAI_BASEURL", "x")
    with pytest.raises(ValueError, match="did you mean RERANKD_OPENAI_BASE_URL"):
        Settings()
    monkeypatch.delenv("RERANKD_OPENAI_BASEURL")
    for name in ("RERANKD_API_URL", "RERANKD_API_KEY", "RERANKD_CACHE_DIR", "RERANKD_OPENAI_BASE_URL"):
        monkeypatch.setenv(name, "x")
    Settings()
    cfg = tmp_path / "rerankd.toml"
    cfg.write_text('modle = "m1"\n')
    monkeypatch.setenv("RERANKD_CONFIG", str(cfg))
    with pytest.raises(ValueError, match="unknown setting 'modle'; did you mean model"):
        Settings()
    cfg.write_text("[quotas.alice]\nrequests_per_minute = 5\n")
    assert Settings().quota_for("alice").requests_per_minute == 5


MISSPELT_ON_PURPOSE = {"test_config.py", "test_fairness.py"}


def test_every_rerankd_variable_the_project_sets_is_known() -> None:
    import re

    from rerankd.config import CLIENT_ENV, check_environment, env_names

    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for sub in ("tests", "bench", "deploy", "Makefile", "docs", "README.md", "examples"):
        paths = [root / sub] if (root / sub).is_file() else (root / sub).rglob("*")
        for p in paths:
            if (
                p.is_file()
                and p.suffix in ("", ".py", ".yaml", ".yml", ".toml", ".sh", ".env", ".md")
                and p.name not in MISSPELT_ON_PURPOSE
            ):
                found |= set(re.findall(r"\b(RERANKD_[A-Z0-9_]*[A-Z0-9])\b", p.read_text(errors="ignore")))
    found -= {"RERANKD_OPENAI"}  # a prefix in docstrings
    check_environment({name: "x" for name in found})
    # the scan really reads the project: settings, client variables and the config file's name
    assert {"RERANKD_REDIS_URL", "RERANKD_MODEL", "RERANKD_CONFIG"} <= found
    assert found & CLIENT_ENV and found & env_names()  # both kinds checked, not just skipped


@pytest.mark.parametrize("field", ["model", "models", "aliases"])
def test_a_model_named_like_another_models_queue_is_refused_at_start_up(field: str) -> None:
    value: object = {
        "model": "m.attention",
        "models": ["ok", "m.logprobs"],
        "aliases": {"a": {"model": "m.score"}},
    }[field]
    with pytest.raises(ValueError, match=r"model name 'm\.\w+' ends with"):
        Settings(**{field: value})
    assert Settings(model="qwen2.5-coder-0.5b-instruct").model == "qwen2.5-coder-0.5b-instruct"


def test_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ as the broker, the job store staying in Redis; another Redis cannot be the broker."""
    monkeypatch.setenv("RERANKD_REDIS_URL", "redis://h:1/2")
    monkeypatch.setenv("RERANKD_BROKER_URL", "amqp://u:p@mq:5672/v")
    s = Settings()
    assert s.amqp and s.celery_broker_url == "amqp://u:p@mq:5672/v" and s.store_url == "redis://h:1/2"
    monkeypatch.setenv("RERANKD_BROKER_URL", "redis://other:6379/0")
    with pytest.raises(ValueError, match=r"RERANKD_BROKER_URL=redis://.*RERANKD_REDIS_URL"):
        Settings()
