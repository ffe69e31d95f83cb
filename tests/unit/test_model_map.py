"""RERANKD_MODEL_MAP / RERANKD_UNKNOWN_MODEL: Cohere-named (or any) models run as a configured one."""

from __future__ import annotations

import pytest

from rerankd.config import Settings


def test_unknown_model_error_says_how_to_map_it() -> None:
    with pytest.raises(KeyError) as e:
        Settings().resolve_model("rerank-english-v3.0")
    message = e.value.args[0]
    assert "unknown model 'rerank-english-v3.0'" in message
    assert "RERANKD_MODEL_MAP" in message and "RERANKD_UNKNOWN_MODEL=rerankd" in message


def test_exact_names_then_patterns_then_the_default_for_unknown_names() -> None:
    s = Settings(
        model="m0",
        aliases={"small": {"model": "m1"}},  # type: ignore[dict-item]
        model_map={"rerank-v3.5": "small", "rerank-english-*": "rerankd", "rerank-*": "small"},
    )
    assert s.resolve_model("rerank-v3.5")[0] == "m1"
    assert s.resolve_model("rerank-english-v3.0")[0] == "m0"  # first matching pattern, in order
    assert s.resolve_model("rerank-multilingual-v3.0")[0] == "m1"
    assert s.resolve_model("small")[0] == "m1"  # known names are never remapped
    with pytest.raises(KeyError, match="unknown model 'gpt-x'"):
        s.resolve_model("gpt-x")
    fallback = Settings(model="m0", unknown_model="rerankd")
    assert fallback.resolve_model("anything")[0] == "m0"


def test_a_map_to_an_unknown_name_is_reported_not_followed() -> None:
    s = Settings(model_map={"a": "b", "b": "a"})
    with pytest.raises(KeyError, match="mapped to 'b', which is not a known model"):
        s.resolve_model("a")


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_MODEL_MAP", '{"rerank-*": "rerankd"}')
    monkeypatch.setenv("RERANKD_UNKNOWN_MODEL", "rerankd")
    s = Settings()
    assert s.model_map == {"rerank-*": "rerankd"} and s.unknown_model == "rerankd"
