"""Resumable batch runs: journal, resume, mismatch, torn lines, atomic output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from rerankd.runs import (
    JournalError,
    JournalMismatchError,
    ResumableRun,
    engine_executor,
    journal_path,
    read_journal,
    read_results,
    run_resumable,
)
from rerankd.strategies import rerank_many
from rerankd.types import (
    Candidate,
    Query,
    RankedDoc,
    RerankRequest,
    RerankResult,
    SlidingWindowConfig,
)
from tests.support.scripted_engine import ScriptedEngine

SETTINGS = {"strategy": "fake", "model": "m"}


def make_requests(n: int, k: int = 5) -> list[RerankRequest]:
    return [
        RerankRequest(
            query=Query(qid=f"q{i}", text=f"query {i}"),
            candidates=[Candidate(docid=f"q{i}d{j}", text=f"passage {j} rel={(j * 7 + i) % k}") for j in range(k)],
            strategy=SlidingWindowConfig(window_size=4, stride=2),
        )
        for i in range(n)
    ]


def fake_result(req: RerankRequest) -> RerankResult:
    """Deterministic: reverse first-stage order."""
    docs = list(reversed(req.candidates))
    return RerankResult(
        qid=req.query.qid,
        ranking=[
            RankedDoc(docid=c.docid, rank=r, score=1.0 / r, first_stage_rank=len(docs) - r + 1)
            for r, c in enumerate(docs, start=1)
        ],
        strategy="fake",
        model="m",
    )


def fake_executor(
    fail_after: int | None = None, order: str = "forward", dup: bool = False, calls: list[int] | None = None
):
    async def execute(reqs: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        idx = list(range(len(reqs)))
        if order == "reverse":
            idx.reverse()
        for n, i in enumerate(idx):
            if fail_after is not None and n >= fail_after:
                raise RuntimeError("worker died")
            if calls is not None:
                calls.append(i)
            await asyncio.sleep(0)
            yield i, fake_result(reqs[i])
            if dup:
                yield i, fake_result(reqs[i])

    return execute


def run_all(reqs, out: Path, fmt: str = "trec", **kw):
    execute = kw.pop("execute", None) or fake_executor()
    settings = kw.pop("settings", SETTINGS)
    return asyncio.run(run_resumable(reqs, execute, out, fmt, settings=settings, progress=False, **kw))


def test_run_writes_output_in_input_order_and_keeps_journal(tmp_path: Path) -> None:
    reqs = make_requests(6)
    out = tmp_path / "run.trec"
    summary = run_all(reqs, out, execute=fake_executor(order="reverse"))
    assert summary.ran == 6 and summary.resumed == 0 and summary.journal_kept
    qids = [line.split()[0] for line in out.read_text().splitlines()]
    assert list(dict.fromkeys(qids)) == [f"q{i}" for i in range(6)]
    assert len(qids) == 6 * 5
    journal = journal_path(out)
    assert journal.name == "run.trec.journal.jsonl"
    contents = read_journal(journal)
    assert contents.header["settings"] == SETTINGS and sorted(contents.results) == list(range(6))
    assert [r.qid for r in read_results(journal)] == [f"q{i}" for i in range(6)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_interrupted_run_resumes_without_redoing_or_duplicating(tmp_path: Path) -> None:
    reqs = make_requests(8)
    ref = tmp_path / "ref.trec"
    run_all(reqs, ref)
    out = tmp_path / "run.trec"
    with pytest.raises(RuntimeError, match="worker died"):
        run_all(reqs, out, execute=fake_executor(fail_after=3))
    assert not out.exists()
    assert sorted(read_journal(journal_path(out)).results) == [0, 1, 2]

    calls: list[int] = []
    summary = run_all(reqs, out, execute=fake_executor(calls=calls))
    assert summary.resumed == 3 and summary.ran == 5 and len(calls) == 5
    assert out.read_text() == ref.read_text()
    lines = journal_path(out).read_text().splitlines()[1:]
    assert sorted(json.loads(line)["index"] for line in lines) == list(range(8))

    # A finished run reruns nothing and rewrites the same output.
    calls.clear()
    summary = run_all(reqs, out, execute=fake_executor(calls=calls))
    assert calls == [] and summary.ran == 0 and summary.resumed == 8
    assert out.read_text() == ref.read_text()


def test_torn_last_line_is_cut_off_and_redone(tmp_path: Path) -> None:
    reqs = make_requests(4)
    out = tmp_path / "run.jsonl"
    with pytest.raises(RuntimeError):
        run_all(reqs, out, "jsonl", execute=fake_executor(fail_after=2))
    journal = journal_path(out)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"index": 2, "qid": "q2", "rank')  # killed mid-write
    contents = read_journal(journal)
    assert contents.torn and sorted(contents.results) == [0, 1] and contents.good_bytes == len(whole)
    summary = run_all(reqs, out, "jsonl")
    assert summary.resumed == 2 and summary.ran == 2
    assert [json.loads(line)["qid"] for line in out.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]
    assert all(json.loads(line) for line in journal.read_text().splitlines())


def test_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    reqs = make_requests(3)
    out = tmp_path / "run.trec"
    run_all(reqs, out)
    journal = journal_path(out)
    lines = journal.read_text().splitlines()
    lines[1] = lines[1][:20]
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match=r"journal.jsonl:2: corrupt journal line"):
        run_all(reqs, out)


def test_different_settings_refuse_to_resume_unless_restart(tmp_path: Path) -> None:
    reqs = make_requests(3)
    out = tmp_path / "run.trec"
    with pytest.raises(RuntimeError):
        run_all(reqs, out, execute=fake_executor(fail_after=1))
    other = {"strategy": "fake", "model": "other"}
    with pytest.raises(JournalMismatchError, match=r"differs in model \(journal: \"m\", now: \"other\"\).*--restart"):
        run_all(reqs, out, settings=other)
    summary = run_all(reqs, out, settings=other, restart=True)
    assert summary.resumed == 0 and summary.ran == 3
    assert read_journal(journal_path(out)).header["settings"] == other


def test_no_keep_journal_removes_it(tmp_path: Path) -> None:
    out = tmp_path / "run.trec"
    summary = run_all(make_requests(2), out, keep_journal=False)
    assert not summary.journal_kept and not journal_path(out).exists() and out.exists()


def test_duplicate_results_from_executor_are_journaled_once(tmp_path: Path) -> None:
    out = tmp_path / "run.trec"
    summary = run_all(make_requests(3), out, execute=fake_executor(dup=True))
    assert summary.ran == 3
    assert len(journal_path(out).read_text().splitlines()) == 1 + 3


def test_foreign_result_is_rejected(tmp_path: Path) -> None:
    reqs = make_requests(2)

    async def wrong(rs: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        yield 0, fake_result(rs[1])

    with pytest.raises(JournalError, match="qid 'q1'"):
        run_all(reqs, tmp_path / "run.trec", execute=wrong)


def test_executor_that_drops_queries_is_reported(tmp_path: Path) -> None:
    async def lazy(rs: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        yield 0, fake_result(rs[0])

    with pytest.raises(JournalError, match="without results for 2 queries"):
        run_all(make_requests(3), tmp_path / "run.trec", execute=lazy)


def test_only_runs_a_subset(tmp_path: Path) -> None:
    reqs = make_requests(5)
    run = ResumableRun(reqs, tmp_path / "run.trec", settings=SETTINGS, progress=False)
    run.open()
    asyncio.run(run.run(fake_executor(), only=[1, 3]))
    assert sorted(run.results) == [1, 3] and run.pending == [0, 2, 4]
    with pytest.raises(JournalError, match="no result yet"):
        run.finish()
    run.close()


def test_a_journal_in_use_is_locked(tmp_path: Path) -> None:
    reqs = make_requests(2)
    first = ResumableRun(reqs, tmp_path / "run.trec", settings=SETTINGS, progress=False)
    first.open()
    try:
        second = ResumableRun(reqs, tmp_path / "run.trec", settings=SETTINGS, progress=False)
        with pytest.raises(JournalError, match="in use by another running rerank run"):
            second.open()
    finally:
        first.close()


def test_engine_executor_matches_rerank_many(tmp_path: Path) -> None:
    reqs = make_requests(5, k=9)
    expected = asyncio.run(rerank_many(reqs, ScriptedEngine()))
    out = tmp_path / "run.jsonl"
    summary = run_all(reqs, out, "jsonl", execute=engine_executor(ScriptedEngine(), concurrency=3))
    assert summary.ran == 5
    got = [RerankResult.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [g.docids for g in got] == [e.docids for e in expected]


def test_engine_executor_stops_on_error(tmp_path: Path) -> None:
    class Failing(ScriptedEngine):
        async def generate(self, prompts, max_tokens):
            if any("query 2" in m.content for p in prompts for m in p):
                raise RuntimeError("engine exploded")
            return await super().generate(prompts, max_tokens)

    out = tmp_path / "run.trec"
    with pytest.raises(RuntimeError, match="engine exploded"):
        run_all(make_requests(4), out, execute=engine_executor(Failing(), concurrency=1))
    assert sorted(read_journal(journal_path(out)).results) == [0, 1]


def test_read_results_of_plain_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    run_all(make_requests(3), out, "jsonl")
    assert [r.qid for r in read_results(out)] == ["q0", "q1", "q2"]


def test_torn_header_starts_over_and_restart_respects_the_lock(tmp_path: Path) -> None:
    reqs = make_requests(2)
    out = tmp_path / "run.trec"
    journal_path(out).write_bytes(b'{"rerankd_journal": 1, "finger')  # killed while creating
    summary = run_all(reqs, out)
    assert summary.ran == 2 and read_journal(journal_path(out)).header["settings"] == SETTINGS

    first = ResumableRun(reqs, out, settings=SETTINGS, progress=False)
    first.open()
    try:
        with pytest.raises(JournalError, match="in use"):
            ResumableRun(reqs, out, settings=SETTINGS, restart=True, progress=False).open()
        assert sorted(read_journal(journal_path(out)).results) == [0, 1]  # untouched
    finally:
        first.close()
