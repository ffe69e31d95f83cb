import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankd.strategies.parsing import parse_permutation

GOLDEN = json.loads((Path(__file__).parent / "data" / "rank_llm_parse_golden.json").read_text())["cases"]


def test_clean_numeric() -> None:
    p = parse_permutation("[2] > [3] > [1]", 3)
    assert p.order == [1, 2, 0]
    assert p.repairs == []


def test_clean_alpha() -> None:
    p = parse_permutation("[C] > [A] > [B]", 3, "alpha")
    assert p.order == [2, 0, 1]
    assert not p.repaired


def test_superscript_and_fullwidth_digits() -> None:
    assert parse_permutation("[²] > [¹] > [³]", 3).order == [1, 0, 2]
    assert parse_permutation("［３］ > ［１］ > ［２］", 3).order == [2, 0, 1]
    assert parse_permutation("[１２] > [1]", 12).order[:2] == [11, 0]


def test_duplicates_out_of_range_and_missing() -> None:
    p = parse_permutation("[2] > [2] > [9] > [0] > [1]", 4)
    assert p.order == [1, 0, 2, 3]
    joined = " | ".join(p.repairs)
    assert "duplicate" in joined and "out-of-range" in joined and "missing" in joined


def test_prose_and_think_block() -> None:
    text = "<think>maybe [1] > [2] is best... </think>\nThe ranking is [3] > [1] > [2]. Done."
    assert parse_permutation(text, 3).order == [2, 0, 1]


def test_bare_numbers_fallback() -> None:
    p = parse_permutation("3 > 1 > 2", 3)
    assert p.order == [2, 0, 1]
    assert "identifiers without brackets" in p.repairs


def test_empty_output_keeps_first_stage_order() -> None:
    p = parse_permutation("", 4)
    assert p.order == [0, 1, 2, 3]
    assert p.repairs == ["empty output"]
    q = parse_permutation("I cannot rank these passages.", 2)
    assert q.order == [0, 1] and "no identifiers found" in q.repairs


def test_zero_items() -> None:
    assert parse_permutation("[1] > [2]", 0).order == []


@settings(max_examples=400, deadline=None)
@given(text=st.text(), n=st.integers(min_value=0, max_value=40))
def test_any_text_gives_a_permutation_numeric(text: str, n: int) -> None:
    assert sorted(parse_permutation(text, n).order) == list(range(n))


@settings(max_examples=400, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=-5, max_value=30), max_size=40),
    n=st.integers(min_value=1, max_value=26),
    sep=st.sampled_from([" > ", ">", ", ", " "]),
)
def test_generated_like_outputs_give_a_permutation(ids: list[int], n: int, sep: str) -> None:
    text = sep.join(f"[{i}]" for i in ids)
    assert sorted(parse_permutation(text, n).order) == list(range(n))
    alpha = sep.join(f"[{chr(ord('A') + (i % 26))}]" for i in ids)
    assert sorted(parse_permutation(alpha, n, "alpha").order) == list(range(n))


# --------------------------------------------------------------------------- rule "rank_llm"


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: repr(c["text"][:30]))
def test_rank_llm_rule_matches_rank_llm(case: dict) -> None:
    """Orders recorded from rank_llm 0.26 itself (real generations and edge cases)."""
    got = parse_permutation(case["text"], case["n"], case["kind"], "rank_llm").order
    assert got == case["rank_llm_order"]


def test_rules_differ_on_numbers_in_prose() -> None:
    text = "[1] 5. Cancel. A flea can live up to a year.\n[2] 1. The life cycle"
    assert parse_permutation(text, 20).order[:3] == [0, 1, 2]
    assert parse_permutation(text, 20, rule="rank_llm").order[:3] == [0, 4, 1]


def test_rank_llm_rule_keeps_order_on_unreadable_digits() -> None:
    p = parse_permutation("\u24ea > [3] > [1]", 3, rule="rank_llm")
    assert p.order == [0, 1, 2]
    assert p.repairs == ["unreadable digits: window order kept"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(), n=st.integers(min_value=0, max_value=40), alpha=st.booleans())
def test_rank_llm_rule_gives_a_permutation(text: str, n: int, alpha: bool) -> None:
    kind = "alpha" if alpha else "numeric"
    assert sorted(parse_permutation(text, n, kind, "rank_llm").order) == list(range(n))
