"""ICR strategy logic with a stub attention engine (hand-built ContextAttention)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence

import numpy as np
import pytest

from rerankd.engines.base import Capability, CapabilityError
from rerankd.strategies.icr import passage_score, plan_chunks, rerank
from rerankd.types import (
    Candidate,
    ContextAttention,
    ICRConfig,
    Query,
    RerankInputError,
    RerankRequest,
    RerankResult,
)
from tests.support.icr import StubAttentionEngine, Table, WordTokenizer, make_request


def run(request: RerankRequest, engine: StubAttentionEngine) -> RerankResult:
    return asyncio.run(rerank(request, engine))


def assert_permutation_with_monotone_scores(req: RerankRequest, res: RerankResult) -> None:
    assert sorted(res.docids) == sorted(c.docid for c in req.candidates)
    scores = [d.score for d in res.ranking]
    assert all(a >= b for a, b in itertools.pairwise(scores))
    assert [d.rank for d in res.ranking] == list(range(1, len(req.candidates) + 1))


TABLE: Table = {
    "hot": (1.0, 1.0),  # attended whatever the query: position/content bias
    "gain": (0.3, 0.0),  # attended because of the query
    "w": (0.2, 0.1),
    "sink": (5.0, 10.0),  # an outlier the N/A query attends far more
}


@pytest.mark.parametrize(("calibration", "winner"), [("none", "d0"), ("na", "d1"), ("masked_na", "d1")])
def test_calibration_removes_query_independent_attention(calibration: str, winner: str) -> None:
    # d0: raw 3.0 but N/A also 3.0; d1: raw 0.6, N/A 0.0.
    req = make_request(["hot hot hot", "gain gain"], calibration=calibration)
    res = run(req, StubAttentionEngine(TABLE))
    assert res.docids[0] == winner
    assert_permutation_with_monotone_scores(req, res)
    by_id = {d.docid: d.score for d in res.ranking}
    if calibration == "none":
        assert by_id == pytest.approx({"d0": 3.0, "d1": 0.6})
    else:
        assert by_id == pytest.approx({"d0": 0.0, "d1": 0.6})


def test_masked_na_drops_the_outlier_token() -> None:
    # d0: ten tokens with calibrated +0.1 and one sink with calibrated -5.
    # mean = -4/11, sample std ~ 1.54, threshold ~ -3.44: only the sink is below it.
    texts = [" ".join(["w"] * 10 + ["sink"]), "gain gain gain"]
    na = run(make_request(texts, calibration="na"), StubAttentionEngine(TABLE))
    masked = run(make_request(texts, calibration="masked_na"), StubAttentionEngine(TABLE))
    assert na.docids == ["d1", "d0"]
    assert {d.docid: d.score for d in na.ranking}["d0"] == pytest.approx(1.0 - 5.0)
    assert masked.docids == ["d0", "d1"]
    assert {d.docid: d.score for d in masked.ranking} == pytest.approx({"d0": 1.0, "d1": 0.9})


def test_passage_score_rule_matches_osu() -> None:
    q = np.array([0.5, 0.4, 0.45, 0.5, 0.6, 0.4, 0.5, 9.0])
    na = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 20.0])
    cal = q - na
    keep = cal > cal.mean() - 2 * cal.std(ddof=1)  # OSU: torch std (unbiased), strict >
    assert not keep[-1] and keep[:-1].all()
    assert passage_score(q, na, "masked_na") == pytest.approx(cal[keep].sum())
    assert passage_score(q, na, "na") == pytest.approx(cal.sum())
    assert passage_score(q, na, "none") == pytest.approx(q.sum())
    # Constant or single-token passages keep all their tokens.
    assert passage_score(np.array([0.3, 0.3]), np.array([0.1, 0.1]), "masked_na") == pytest.approx(0.4)
    assert passage_score(np.array([0.3]), np.array([0.1]), "masked_na") == pytest.approx(0.2)


@pytest.mark.parametrize("doc_order", ["first_stage", "reversed"])
def test_doc_order_in_context(doc_order: str) -> None:
    texts = [f"passage{i} body" for i in range(5)]
    eng = StubAttentionEngine()
    run(make_request(texts, doc_order=doc_order), eng)
    ((context, suffixes),) = eng.calls
    found = re.findall(r"\[(\d)\] passage(\d)", context)
    expected = [0, 1, 2, 3, 4] if doc_order == "first_stage" else [4, 3, 2, 1, 0]
    assert [int(p) for _, p in found] == expected
    assert [int(n) for n, _ in found] == [1, 2, 3, 4, 5]  # numbered by prompt position
    assert context.endswith("passage0 body\n\n" if doc_order == "reversed" else "passage4 body\n\n")
    assert suffixes[0].startswith("Please find information") and "Query: what is it" in suffixes[0]
    assert "Query: N/A" in suffixes[1]


def test_permutation_usage_and_ties() -> None:
    texts = [f"doc{i} " + " ".join(f"t{i}x{j}" for j in range(i % 4 + 1)) for i in range(15)]
    rng = np.random.default_rng(0)
    table: Table = {w: (float(rng.random()), float(rng.random())) for t in texts for w in t.split()}
    eng = StubAttentionEngine(table)
    req = make_request(texts, calibration="masked_na")
    res = run(req, eng)
    assert_permutation_with_monotone_scores(req, res)
    assert res.strategy == "icr" and res.model == "stub-attention"
    assert res.usage.llm_calls == 3  # one context encoding + two suffix passes
    context, suffixes = eng.calls[0]
    assert res.usage.prompt_tokens == len(context.split()) + sum(len(s.split()) for s in suffixes)
    assert not res.warnings
    assert {"rerank_s", "attention_s", "prompt_s"} <= set(res.timings)
    # All-equal attention: ties keep the first-stage order.
    flat = run(make_request(texts), StubAttentionEngine())
    assert flat.docids == [f"d{i}" for i in range(15)]
    assert [d.first_stage_rank for d in flat.ranking] == list(range(1, 16))


def test_calibration_none_runs_only_the_query_suffix() -> None:
    eng = StubAttentionEngine(TABLE)
    res = run(make_request(["gain", "hot"], calibration="none"), eng)
    assert len(eng.calls) == 1 and len(eng.calls[0][1]) == 1
    assert res.usage.llm_calls == 2
    assert res.docids == ["d1", "d0"]


def test_top_n_cuts_the_ranking() -> None:
    req = RerankRequest(
        query=Query(text="q"),
        candidates=[Candidate(docid=f"d{i}", text="gain " * i + "x") for i in range(6)],
        strategy=ICRConfig(),
        top_n=2,
    )
    res = run(req, StubAttentionEngine(TABLE))
    assert res.docids == ["d5", "d4"]


def test_chunks_when_the_prompt_does_not_fit() -> None:
    texts = [" ".join(["gain"] * (i % 3 + 1) + [f"id{i}"] + ["filler"] * 20) for i in range(12)]
    req = make_request(texts, calibration="masked_na")
    whole = StubAttentionEngine(TABLE)
    run(req, whole)
    need = len(whole.calls[0][0].split()) + max(len(s.split()) for s in whole.calls[0][1])
    eng = StubAttentionEngine(TABLE, context_size=need // 3)
    res = run(req, eng)

    assert_permutation_with_monotone_scores(req, res)
    assert len(eng.calls) >= 3
    assert res.usage.llm_calls == 3 * len(eng.calls)
    assert any("chunks" in w for w in res.warnings)
    seen: list[int] = []
    for context, suffixes in eng.calls:
        assert len(context.split()) + max(len(s.split()) for s in suffixes) <= eng.context_size
        assert len(suffixes) == 2  # every chunk has its own N/A calibration pass
        seen += [int(i) for i in re.findall(r"\bid(\d+)\b", context)]
    assert sorted(seen) == list(range(12))  # no candidate dropped or duplicated
    # Chunks are balanced round-robin deals of the first-stage order.
    sizes = [len(re.findall(r"\bid\d+\b", c)) for c, _ in eng.calls]
    assert max(sizes) - min(sizes) <= 1
    # Equal-size chunks: the passages with three 'gain' tokens still come first.
    assert {d.docid for d in res.ranking[:4]} == {"d2", "d5", "d8", "d11"}


def test_plan_chunks_single_prompt_when_it_fits() -> None:
    req = make_request(["a b", "c d"])
    chunks, total = plan_chunks(req, WordTokenizer(), 10_000)
    assert len(chunks) == 1 and chunks[0][0] == [1, 0] and total > 0  # reversed by default
    chunks, _ = plan_chunks(make_request(["a b", "c d"], doc_order="first_stage"), WordTokenizer(), 10_000)
    assert chunks[0][0] == [0, 1]


def test_passage_too_long_for_any_chunk() -> None:
    req = make_request(["word " * 200, "short"])
    with pytest.raises(ValueError, match="alone exceeds"):
        run(req, StubAttentionEngine(context_size=60))


def test_engine_without_attention_is_refused() -> None:
    eng = StubAttentionEngine(capabilities=frozenset({Capability.GENERATE, Capability.LOGPROBS}))
    with pytest.raises(CapabilityError, match="attention"):
        run(make_request(["a", "b"]), eng)
    assert eng.calls == []


def test_rejects_malformed_engine_output() -> None:
    class Short(StubAttentionEngine):
        async def query_attention(
            self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
        ) -> ContextAttention:
            att = await super().query_attention(context, suffixes)
            return att.model_copy(update={"scores": [s[:-1] for s in att.scores]})

    with pytest.raises(ValueError, match="scores for"):
        run(make_request(["a", "b"]), Short())


def test_layer_window_reaches_the_engine_and_is_checked_against_its_layers() -> None:
    class Layered(StubAttentionEngine):
        num_layers = 24

        def __init__(self) -> None:
            super().__init__()
            self.windows: list[tuple[int, int] | None] = []

        async def query_attention(
            self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
        ) -> ContextAttention:
            self.windows.append(layers)
            return await super().query_attention(context, suffixes)

    eng = Layered()
    run(make_request(["a b", "c d"], layers="4:16"), eng)
    run(make_request(["a b", "c d"]), eng)
    assert eng.windows == [(4, 16), None]
    with pytest.raises(
        RerankInputError, match=r"layers 8:30 ends past the 24 layers of stub-attention; END must be <= 24"
    ):
        run(make_request(["a b"], layers=[8, 30]), eng)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4:4", "layers must be START:END with 0 <= START < END, got 4:4"),
        ("-2:3", "layers must be START:END with 0 <= START < END, got -2:3"),
        ("a:b", "layers must be START:END (two integers, e.g. 4:16), got 'a:b'"),
        (7, "layers must be START:END (two integers, e.g. 4:16), got 7"),
    ],
)
def test_layer_window_validation_messages(value: object, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        ICRConfig.model_validate({"layers": value})
    assert e.value.errors()[0]["loc"] == ("layers",)
    assert message in str(e.value)
