"""Distillation pieces without a service: teaching data, splits, student folders, the pointwise and
cascade strategies (a tiny random BERT as the cross-encoder, a scripted LLM), the new configs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from rerankd.distill.data import TeachingDataError, TeachQuery, load_teaching, split_queries, teacher_labels
from rerankd.distill.evaluate import agreement, kendall_tau
from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.cross_encoder.student import NotAStudentError, read_card
from rerankd.jobs.routing import strategy_queue
from rerankd.types import Candidate, CascadeConfig, Query, RankedDoc, RerankRequest, RerankResult
from tests.support.scripted_engine import ScriptedEngine


def _write_teach(tmp: Path, n: int = 6, k: int = 5) -> Path:
    """A query file and a journal as `rerankd rerank` writes them (teacher = reversed order)."""
    qfile = tmp / "q.jsonl"
    with qfile.open("w") as fh:
        for i in range(n):
            cands = [{"docid": f"q{i}d{j}", "text": f"passage {j}"} for j in range(k)]
            fh.write(json.dumps({"qid": f"q{i}", "query": f"query {i}", "candidates": cands}) + "\n")
    journal = tmp / "run.trec.journal.jsonl"
    lines = [json.dumps({"rerankd_journal": 1, "settings": {"model": "t", "strategy": {"name": "icr"}},
                         "inputs": {"input": str(qfile)}, "total": n})]  # fmt: skip
    for i in range(n):
        ranking = [{"docid": f"q{i}d{j}", "rank": r + 1, "score": float(k - r), "first_stage_rank": j + 1}
                   for r, j in enumerate(reversed(range(k)))]  # fmt: skip
        lines.append(json.dumps({"index": i, "qid": f"q{i}", "ranking": ranking, "strategy": "icr", "model": "t"}))
    journal.write_text("\n".join(lines) + "\n")
    return journal


def test_teaching_data_joins_journal_and_query_file(tmp_path: Path) -> None:
    queries = load_teaching([_write_teach(tmp_path)])
    assert [q.qid for q in queries] == [f"q{i}" for i in range(6)]
    q = queries[0]
    assert [d.docid for d in q.docs] == [f"q0d{j}" for j in (4, 3, 2, 1, 0)]
    assert q.docs[0].text == "passage 4" and q.teacher["model"] == "t"
    assert teacher_labels(q, "rank") == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert sum(teacher_labels(q, "score")) == pytest.approx(0.0)


def test_a_bad_journal_line_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    journal = _write_teach(tmp_path)
    lines = journal.read_text().splitlines()
    lines[3] = '{"index": 2, "qid": "q2", "ranking": "oops"}'
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(TeachingDataError, match=re.escape(f"{journal}:4:")):
        load_teaching([journal])
    journal.write_text("\n".join(lines[:3]) + '\n{"index": 2, "qid"')  # torn last line
    with pytest.raises(TeachingDataError, match=re.escape(f"{journal}:4:") + ".*teach stage again"):
        load_teaching([journal])


def test_split_is_by_query_and_reproducible() -> None:
    qs = [TeachQuery(f"q{i}", "x") for i in range(20)]
    train, held = split_queries(qs, 0.2, seed=1)
    assert len(held) == 4 and not {q.qid for q in train} & {q.qid for q in held}
    assert [q.qid for q in split_queries(qs, 0.2, seed=1)[1]] == [q.qid for q in held]
    assert [q.qid for q in split_queries(qs, 0.2, seed=2)[1]] != [q.qid for q in held]
    with pytest.raises(ValueError, match="heldout"):
        split_queries(qs, 1.0, seed=0)


def test_a_folder_that_is_not_a_student_names_what_is_missing(tmp_path: Path, tiny_bert_dir: Path) -> None:
    with pytest.raises(NotAStudentError, match=r"missing config\.json, weights .*, a tokenizer"):
        read_card(tmp_path)
    with pytest.raises(NotAStudentError, match=r"rerankd-student\.json is missing"):
        read_card(tiny_bert_dir)
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine

    with pytest.raises(NotAStudentError, match=r"missing config\.json"):
        CrossEncoderEngine.load(str(tmp_path), device="cpu")


def test_agreement_and_tau() -> None:
    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1.0

    def res(order: Sequence[str]) -> RerankResult:
        return RerankResult(
            ranking=[RankedDoc(docid=d, rank=i + 1, score=-i, first_stage_rank=1) for i, d in enumerate(order)],
            strategy="x", model="m",
        )  # fmt: skip

    assert agreement(res("abc"), res("abc")) == (pytest.approx(1.0), 1.0)
    ndcg, tau = agreement(res("cba"), res("abc"))
    assert ndcg < 1.0 and tau == -1.0


def test_cascade_config_is_validated_and_routed_to_its_llm_queue() -> None:
    cfg = CascadeConfig.model_validate(
        {"student": "s", "top_k": 5, "llm": {"name": "first", "window_size": 5, "stride": 2}}
    )
    assert strategy_queue("p", "m", cfg) == "p.m.logprobs"
    assert strategy_queue("p", "m", CascadeConfig(student="s")) == "p.m.attention"  # ICR by default
    with pytest.raises(ValidationError, match=r"student_top_k .* must be at least top_k"):
        CascadeConfig(student="s", student_top_k=5, top_k=10)
    with pytest.raises(ValidationError):
        CascadeConfig.model_validate({"student": "s", "llm": {"name": "cascade", "student": "s"}})
    with pytest.raises(ValidationError):
        CascadeConfig.model_validate({"student": ""})


def _request(strategy: dict[str, object], n: int = 8) -> RerankRequest:
    words = ["paris", "rivers", "violins", "weather", "volcanoes", "gardeners", "whales", "chefs"]
    cands = [Candidate(docid=f"d{i}", text=f"{words[i % 8]} library rel={(i * 3) % n}") for i in range(n)]
    return RerankRequest.model_validate(
        {"query": Query(qid="q", text="cats"), "candidates": cands, "strategy": strategy}
    )


@pytest.mark.anyio
async def test_pointwise_serves_a_cross_encoder_and_refuses_an_llm(tiny_bert_dir: Path) -> None:
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine
    from rerankd.strategies import rerank

    engine = CrossEncoderEngine.load(str(tiny_bert_dir), device="cpu", max_batch_size=3)
    try:
        req = _request({"name": "pointwise"})
        result = await rerank(req, engine)
        assert sorted(d.docid for d in result.ranking) == sorted(c.docid for c in req.candidates)
        scores = await engine.score_pairs("cats", [c.text for c in req.candidates])
        assert [d.score for d in result.ranking] == sorted(scores, reverse=True)
        assert len(set(scores)) > 1  # a real forward pass over each pair
        with pytest.raises(CapabilityError, match="only scores pairs"):
            await engine.generate([], 5)
    finally:
        await engine.aclose()
    with pytest.raises(CapabilityError, match="'score' capability"):
        await rerank(_request({"name": "pointwise"}), ScriptedEngine(capabilities=frozenset({Capability.GENERATE})))


class _OracleScorer:
    """A PairScorer that reads ``rel=N`` like the scripted LLM does."""

    name = "oracle-ce"
    model = "oracle-student"
    capabilities = frozenset({Capability.SCORE})

    async def score_pairs(self, query: str, passages: Sequence[str], max_length: int | None = None) -> list[float]:
        return [float(re.search(r"rel=(\d+)", p).group(1)) for p in passages]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_cascade_runs_the_student_then_the_llm_on_its_top_k(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.strategies import cascade, rerank

    monkeypatch.setattr(cascade, "_student", lambda name: _OracleScorer())
    seen: list[list[str]] = []
    engine = ScriptedEngine()
    original = engine.generate

    async def spy(prompts, max_tokens):  # type: ignore[no-untyped-def]
        seen.extend([m.content for m in p] for p in prompts)
        return await original(prompts, max_tokens)

    engine.generate = spy  # type: ignore[method-assign]
    llm = {"name": "sliding_window", "window_size": 4, "stride": 2}
    req = _request({"name": "cascade", "student": "s", "student_top_k": 6, "top_k": 4, "llm": llm}, n=8)
    result = await rerank(req, engine)
    assert sorted(d.docid for d in result.ranking) == sorted(c.docid for c in req.candidates)
    head = [d.docid for d in result.ranking]
    # student over the first 6: rel = 0,3,6,1,4,7 -> d5 d2 d4 d1 | d3 d0; LLM reorders the top 4; d6 d7 stay last
    assert set(head[:4]) == {"d5", "d2", "d4", "d1"} and head[4:] == ["d3", "d0", "d6", "d7"]
    assert head[:4] == ["d5", "d2", "d4", "d1"]  # the scripted LLM is an oracle too
    assert {"student_s", "llm_s"} <= set(result.timings) and result.usage.llm_calls >= 1
    prompts = "".join("".join(p) for p in seen)
    assert "rel=2" not in prompts and "rel=5" not in prompts  # d6, d7: beyond student_top_k
    assert "rel=0" not in prompts  # d0: below the student's top 4
    scores = [d.score for d in result.ranking]
    assert scores == sorted(scores, reverse=True)


def test_train_settings_are_checked() -> None:
    from rerankd.distill.train import TrainConfig

    with pytest.raises(ValueError, match="loss 'kl' is not a cross_encoder loss"):
        TrainConfig(loss="kl")
    with pytest.raises(ValueError, match="kind must be"):
        TrainConfig(kind="colbert")
    assert TrainConfig(loss="margin_mse").label_kind == "score" and TrainConfig().label_kind == "rank"


def test_a_registered_student_name_resolves_like_a_model_name(
    tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from rerankd.engines.cross_encoder.student import StudentCard, register_student, write_card
    from rerankd.models.provision import resolve_model

    monkeypatch.setenv("RERANKD_CACHE_DIR", str(tmp_path / "cache"))
    student = tmp_path / "student"
    shutil.copytree(tiny_bert_dir, student)
    with pytest.raises(NotAStudentError, match="is missing"):
        register_student("my-student", student)
    write_card(student, StudentCard(base="tiny", data_sha256="x", loss="ranknet"))
    register_student("my-student", student)
    assert resolve_model("my-student") == student.resolve()
    with pytest.raises(ValueError, match="student name"):
        register_student("bad name!", student)


@pytest.mark.parametrize(("kind", "loss"), [("cross_encoder", "margin_mse"), ("bi_encoder", "kl")])
def test_other_students_train_and_carry_their_card(tmp_path: Path, tiny_bert_dir: Path, kind: str, loss: str) -> None:
    from rerankd.distill.train import TrainConfig, pick_docs, train_student

    queries = load_teaching([_write_teach(tmp_path, n=8, k=6)])
    cfg = TrainConfig(base=str(tiny_bert_dir), kind=kind, loss=loss, epochs=1, batch_size=2, device="cpu", heldout=0.25)
    card = train_student(queries, tmp_path / "student", cfg, progress=False)
    assert card.kind == kind and card.loss == loss and card.steps > 0
    assert len(card.heldout_queries) == 2 and read_card(tmp_path / "student") == card
    assert [d.docid for d in pick_docs(queries[0].docs, 4)] == ["q0d5", "q0d4", "q0d3", "q0d0"]
