import pytest
from pydantic import TypeAdapter, ValidationError

from rerankd.types import (
    Candidate,
    FirstConfig,
    FullRankingConfig,
    ICRConfig,
    Query,
    RerankRequest,
    SlidingWindowConfig,
    StrategyConfig,
)


def _msg(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


def test_stride_zero_message_names_field_and_rule() -> None:
    with pytest.raises(ValidationError) as e:
        SlidingWindowConfig(stride=0)
    assert "stride must be between 1 and window_size (20), got 0" in _msg(e)


def test_stride_above_window() -> None:
    with pytest.raises(ValidationError) as e:
        SlidingWindowConfig(window_size=10, stride=11)
    assert "stride must be between 1 and window_size (10), got 11" in _msg(e)


def test_window_below_two() -> None:
    with pytest.raises(ValidationError) as e:
        SlidingWindowConfig(window_size=1, stride=1)
    assert "window_size must be between 2 and 100, got 1" in _msg(e)


def test_strategy_upper_bounds() -> None:
    with pytest.raises(ValidationError) as e:
        SlidingWindowConfig(window_size=101, stride=10)
    assert "window_size must be between 2 and 100, got 101" in _msg(e)
    with pytest.raises(ValidationError) as e:
        ICRConfig(max_words_per_passage=2001)
    assert "max_words_per_passage" in _msg(e) and "2000" in _msg(e)


def test_first_window_limited_to_alphabet() -> None:
    with pytest.raises(ValidationError) as e:
        FirstConfig(window_size=30, stride=10)
    assert "window_size must be at most 26" in _msg(e)


def test_discriminated_union_and_unknown_fields() -> None:
    ta: TypeAdapter[StrategyConfig] = TypeAdapter(StrategyConfig)
    cfg = ta.validate_python({"name": "icr", "calibration": "na"})
    assert cfg.name == "icr"
    with pytest.raises(ValidationError) as e:
        ta.validate_python({"name": "icr", "window_size": 20})
    assert "window_size" in str(e.value)
    with pytest.raises(ValidationError):
        ta.validate_python({"name": "nope"})


def test_request_rejects_duplicate_docids_and_empty_lists() -> None:
    q = Query(text="q")
    with pytest.raises(ValidationError) as e:
        RerankRequest(query=q, candidates=[Candidate(docid="a", text="x"), Candidate(docid="a", text="y")])
    assert "candidates[1].docid 'a' is duplicated" in str(e.value)
    with pytest.raises(ValidationError) as e2:
        RerankRequest(query=q, candidates=[])
    assert "candidates" in str(e2.value)


def test_defaults_are_not_shared() -> None:
    a = RerankRequest(query=Query(text="q"), candidates=[Candidate(docid="a", text="x")])
    b = RerankRequest(query=Query(text="q"), candidates=[Candidate(docid="a", text="x")])
    assert a.strategy is not b.strategy


def test_generation_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="max_output_tokens"):
        SlidingWindowConfig(max_output_tokens=0)
    with pytest.raises(ValidationError, match="max_output_tokens"):
        FullRankingConfig(max_output_tokens=10**6)
    with pytest.raises(ValidationError, match="parser"):
        SlidingWindowConfig(parser="regex")  # type: ignore[arg-type]
    assert SlidingWindowConfig().parser == "bracketed" and SlidingWindowConfig().max_output_tokens is None
