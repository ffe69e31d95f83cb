import asyncio
import itertools

import pytest

from rerankd.engines.base import Capability, CapabilityError
from rerankd.strategies import get_strategy, rerank, rerank_many
from rerankd.strategies.first import IdentifierTokenError, identifier_token_ids
from rerankd.types import (
    Candidate,
    FirstConfig,
    FullRankingConfig,
    Query,
    RerankInputError,
    RerankRequest,
    SlidingWindowConfig,
    StrategyConfig,
)
from tests.support.scripted_engine import ScriptedEngine, WordTokenizer


def make_request(n: int, strategy: StrategyConfig, qid: str = "q1") -> RerankRequest:
    # Relevance rises towards the back, so a working reranker must move things forward.
    cands = [Candidate(docid=f"d{i}", text=f"passage number {i} rel={i}") for i in range(n)]
    return RerankRequest(query=Query(qid=qid, text="which passage"), candidates=cands, strategy=strategy)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def assert_permutation_with_monotone_scores(req: RerankRequest, res) -> None:  # type: ignore[no-untyped-def]
    assert sorted(res.docids) == sorted(c.docid for c in req.candidates)
    assert [d.rank for d in res.ranking] == list(range(1, len(req.candidates) + 1))
    scores = [d.score for d in res.ranking]
    assert all(a >= b for a, b in itertools.pairwise(scores))


@pytest.mark.parametrize(("n", "calls"), [(100, 9), (7, 1), (25, 2)])
def test_sliding_window_calls_and_order(n: int, calls: int) -> None:
    eng = ScriptedEngine()
    req = make_request(n, SlidingWindowConfig())
    res = run(rerank(req, eng))
    assert eng.generate_calls == calls
    assert res.usage.llm_calls == calls
    assert_permutation_with_monotone_scores(req, res)
    # A perfect window ranker sliding back to front brings the top `stride` to the front.
    top = min(10, n)
    assert res.docids[:top] == [f"d{i}" for i in range(n - 1, n - 1 - top, -1)]
    assert res.warnings == []
    assert {d.docid: d.first_stage_rank for d in res.ranking}["d0"] == 1


def test_sliding_window_two_passes() -> None:
    eng = ScriptedEngine()
    req = make_request(30, SlidingWindowConfig(window_size=10, stride=5, passes=2))
    res = run(rerank(req, eng))
    assert eng.generate_calls == 2 * 5
    assert res.docids[:10] == [f"d{i}" for i in range(29, 19, -1)]


@pytest.mark.parametrize(
    "answer",
    ["", "I refuse.", "[3] > [3] > [99] > [0]", "<think>[1]</think> ²>¹", "[A] > [B]", "1 2 3 4 5 6 7 8 9 10 11 12"],
)
def test_any_model_output_ends_in_a_permutation(answer: str) -> None:
    eng = ScriptedEngine(respond=lambda _prompt: answer)
    req = make_request(25, SlidingWindowConfig())
    res = run(rerank(req, eng))
    assert_permutation_with_monotone_scores(req, res)


def test_repairs_are_reported_as_warnings() -> None:
    eng = ScriptedEngine(respond=lambda _p: "[2] > [2] > [1]")
    res = run(rerank(make_request(5, SlidingWindowConfig()), eng))
    assert any("duplicate" in w for w in res.warnings)
    assert res.docids == ["d1", "d0", "d2", "d3", "d4"]


def test_full_ranking_one_call_and_limit() -> None:
    eng = ScriptedEngine()
    req = make_request(40, FullRankingConfig(max_candidates=50))
    res = run(rerank(req, eng))
    assert eng.generate_calls == 1
    assert res.docids[:5] == ["d39", "d38", "d37", "d36", "d35"]
    with pytest.raises(RerankInputError, match=r"full_ranking\.max_candidates is 10, got 40"):
        run(rerank(make_request(40, FullRankingConfig(max_candidates=10)), ScriptedEngine()))


@pytest.mark.parametrize(("identifiers", "prompt_end"), [("as_written", "<assistant>\n"), ("after_bracket", "[")])
def test_first_one_pass_per_window_and_scores(identifiers: str, prompt_end: str) -> None:
    # The word tokenizer writes "[A" as one token: as_written reads it at the answer start.
    eng = ScriptedEngine()
    req = make_request(25, FirstConfig(identifiers=identifiers))  # type: ignore[arg-type]
    res = run(rerank(req, eng))
    assert eng.logprob_calls == 2 and eng.generate_calls == 0
    assert all(p.endswith(prompt_end) for p in eng.prompts)
    assert_permutation_with_monotone_scores(req, res)
    assert res.docids[:10] == [f"d{i}" for i in range(24, 14, -1)]
    # windows (5,25) then (0,15): the front window fixes 15 positions and scores them in
    # [1/2, 1]; the back window fixes the last 10 in [0, 1/2]
    assert all(d.score >= 0.5 for d in res.ranking[:15])
    assert all(d.score <= 0.5 for d in res.ranking[15:])


def test_first_single_window_scores_are_softmax() -> None:
    res = run(rerank(make_request(5, FirstConfig()), ScriptedEngine()))
    assert abs(sum(d.score for d in res.ranking) - 1.0) < 1e-9
    assert res.docids == ["d4", "d3", "d2", "d1", "d0"]


def test_first_needs_single_token_letters() -> None:
    class SplitLetters(WordTokenizer):
        """Writes the letter C as two tokens wherever it appears."""

        def encode(self, text: str) -> list[int]:
            return super().encode(text.replace("C", "C C"))

    assert len(identifier_token_ids(WordTokenizer(), 20)) == 20
    with pytest.raises(IdentifierTokenError, match="'C' is written as 2 tokens"):
        identifier_token_ids(SplitLetters(), 5)
    eng = ScriptedEngine()
    eng.tokenizer = SplitLetters()
    with pytest.raises(IdentifierTokenError, match="'C' is written as 2 tokens"):
        run(rerank(make_request(5, FirstConfig()), eng))


def test_capability_errors() -> None:
    eng = ScriptedEngine(capabilities=frozenset({Capability.GENERATE}))
    with pytest.raises(CapabilityError, match="'logprobs'"):
        run(rerank(make_request(5, FirstConfig()), eng))


def test_rerank_many_keeps_input_order() -> None:
    eng = ScriptedEngine()
    reqs = [make_request(n, SlidingWindowConfig(), qid=f"q{n}") for n in (30, 5, 12, 2)]
    seen: list[int] = []
    res = run(rerank_many(reqs, eng, concurrency=3, on_done=lambda i, _r: seen.append(i)))
    assert [r.qid for r in res] == ["q30", "q5", "q12", "q2"]
    assert sorted(seen) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("bogus")


def test_top_n_truncates_result() -> None:
    req = make_request(12, SlidingWindowConfig()).model_copy(update={"top_n": 3})
    res = run(rerank(req, ScriptedEngine()))
    assert res.docids == ["d11", "d10", "d9"]


def test_max_output_tokens_sets_the_generation_budget() -> None:
    eng = ScriptedEngine()
    run(rerank(make_request(40, SlidingWindowConfig()), eng))
    exact = eng.max_tokens[0]
    assert exact > 0 and set(eng.max_tokens) == {exact}  # a full permutation of 20 ids
    eng = ScriptedEngine()
    run(rerank(make_request(40, SlidingWindowConfig(max_output_tokens=256)), eng))
    assert eng.max_tokens == [256, 256, 256]
    eng = ScriptedEngine()
    run(rerank(make_request(10, FullRankingConfig(max_output_tokens=7)), eng))
    assert eng.max_tokens == [7]


def test_parser_setting_reaches_the_parse() -> None:
    answer = "[1] 5. Cancel, see 3"
    bracketed = run(rerank(make_request(6, SlidingWindowConfig()), ScriptedEngine(respond=lambda _p: answer)))
    digits = run(
        rerank(make_request(6, SlidingWindowConfig(parser="rank_llm")), ScriptedEngine(respond=lambda _p: answer))
    )
    assert bracketed.docids[:3] == ["d0", "d1", "d2"]
    assert digits.docids[:3] == ["d0", "d4", "d2"]
