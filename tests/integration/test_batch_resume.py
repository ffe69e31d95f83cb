"""`rerankd rerank` killed with SIGKILL mid-run and started again finishes the same run:
identical output to an uninterrupted run, every query reranked and written exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli_runs import check_journal_once, env, kill_after, start
from tests.support.stack import REPO

pytestmark = pytest.mark.integration


# Runs the real CLI with the engine factory patched to a slowed-down scripted engine, so the
# test controls timing (a window call takes DELAY seconds) without a model.
SCRIPTED_CLI = """
import asyncio, os, sys
import rerankd.engines.factory as factory
from tests.support.scripted_engine import ScriptedEngine

DELAY = float(os.environ.get("SCRIPTED_DELAY", "0.02"))

class SlowScripted(ScriptedEngine):
    async def generate(self, prompts, max_tokens):
        await asyncio.sleep(DELAY)
        return await super().generate(prompts, max_tokens)

factory.load_engine = lambda kind, model, **kw: SlowScripted()
from rerankd.cli import main
sys.argv = ["rerankd", *sys.argv[1:]]
main()
"""


def write_queries(path: Path, n: int, k: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            cands = [
                {"docid": f"q{i}-d{j}", "text": f"passage {j} of query {i} rel={(j * 5 + i) % 7}"} for j in range(k)
            ]
            fh.write(json.dumps({"qid": f"q{i}", "query": f"question {i}", "candidates": cands}) + "\n")


def trec_qids(path: Path) -> list[str]:
    return list(dict.fromkeys(line.split()[0] for line in path.read_text().splitlines()))


def test_sigkill_and_resume_scripted_engine(tmp_path: Path) -> None:
    n = 40
    queries = tmp_path / "queries.jsonl"
    write_queries(queries, n, k=10)
    base = [sys.executable, "-c", SCRIPTED_CLI, "rerank", str(queries), "--strategy", "sliding_window"]
    base += ["-p", "window_size=4", "-p", "stride=2", "--concurrency", "3"]
    log = tmp_path / "stderr.log"

    ref = tmp_path / "ref.trec"
    done = subprocess.run([*base, "-o", str(ref)], cwd=REPO, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "run.trec"
    journal = out.with_name(out.name + ".journal.jsonl")
    seen = []
    for n_kill in (3, 12, 25):  # three crashes at different points
        seen.append(kill_after(start([*base, "-o", str(out)], env(), log), journal, n_kill))
        assert not out.exists()
    assert seen == sorted(seen) and seen[-1] < n

    final = subprocess.run([*base, "-o", str(out)], cwd=REPO, env=env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"({seen[-1]} resumed from the journal" in final.stderr
    assert "journal kept" in final.stderr
    assert out.read_text() == ref.read_text()
    assert trec_qids(out) == [f"q{i}" for i in range(n)]
    check_journal_once(journal, n)
    assert not list(tmp_path.glob(".*.tmp"))

    # Different settings refuse to resume; --restart starts over.
    other = subprocess.run(
        [*base[:-2], "--concurrency", "1", "-p", "passes=2", "-o", str(out)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert other.returncode == 2 and "differs in strategy" in other.stderr and "--restart" in other.stderr


def test_sigkill_and_resume_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    n = 40
    queries = tmp_path / "queries.jsonl"
    write_queries(queries, n, k=8)
    base = [sys.executable, "-m", "rerankd", "rerank", str(queries), "--model", str(tiny_model_dir)]
    base += ["--strategy", "first", "-p", "window_size=4", "-p", "stride=2", "--format", "jsonl"]
    log = tmp_path / "stderr.log"

    ref = tmp_path / "ref.jsonl"
    done = subprocess.run([*base, "-o", str(ref)], cwd=REPO, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "run.jsonl"
    journal = out.with_name(out.name + ".journal.jsonl")
    killed_at = kill_after(start([*base, "-o", str(out)], env(), log), journal, 3)
    assert 3 <= killed_at < n
    final = subprocess.run([*base, "-o", str(out)], cwd=REPO, env=env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]

    def strip_timings(path: Path) -> list[dict[str, object]]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for r in rows:
            r.pop("timings")
        return rows

    got, want = strip_timings(out), strip_timings(ref)
    assert [r["qid"] for r in got] == [f"q{i}" for i in range(n)]
    assert got == want
    check_journal_once(journal, n)
