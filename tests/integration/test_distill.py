"""`rerankd distill` end to end on a real stack: the tiny Llama teaches through the queue (ICR),
a tiny random BERT student is trained, evaluated and served (a cross_encoder worker behind
/v2/rerank, and a cascade job on the LLM's worker).  Each long stage is killed with SIGKILL once
and run again: it finishes without redoing finished work.  Machinery only: the scores mean nothing."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from tests.support.cli_runs import check_journal_once, env, journaled, kill_after, start
from tests.support.stack import REPO

pytestmark = pytest.mark.integration

KEY = "key-distill"
HEADERS = {"Authorization": f"Bearer {KEY}"}
N_QUERIES = 12
WORDS = "paris rivers violins weather volcanoes gardeners whales chefs telescopes bicycles".split()


def write_queries(path: Path) -> None:
    with path.open("w") as fh:
        for i in range(N_QUERIES):
            cands = [{"docid": f"q{i}-d{j}", "text": f"{WORDS[(i + j) % 10]} and the library {j}"} for j in range(6)]
            fh.write(
                json.dumps({"qid": f"q{i}", "query": f"where are the {WORDS[i % 10]}", "candidates": cands}) + "\n"
            )


class Stack:
    def __init__(self, stack: LocalStack, url: str, work: Path, tiny: str) -> None:
        self.stack, self.url, self.work, self.tiny = stack, url, work, tiny


@pytest.fixture(scope="module")
def stack(test_redis: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("distill") / "work"
    logs = tmp_path_factory.mktemp("distill-logs")
    student = work / "student"
    aliases = {
        "tiny": {"model": str(tiny_model_dir)},
        "student": {"model": str(student), "strategy": {"name": "pointwise"}},
    }
    stack_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")},
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RERANKD_REDIS_URL": test_redis,
        "RERANKD_KEY_PREFIX": f"dist{secrets.token_hex(3)}",
        "RERANKD_API_KEYS": f"dist:{KEY}",
        "RERANKD_ALIASES": json.dumps(aliases),
        "RERANKD_LEASE_S": "2",
        "RERANKD_REAPER_INTERVAL_S": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    local = LocalStack(stack_env, logs, cwd=REPO)
    port = free_port()
    try:
        local.start_worker("tiny", str(tiny_model_dir), "hf", concurrency=2)
        local.start_api(port)
        local.wait_workers([str(tiny_model_dir)], headers=HEADERS)
        yield Stack(local, f"http://127.0.0.1:{port}", work, str(tiny_model_dir))
    finally:
        local.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rerankd", *args]


def _job(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(f"{stack.url}/v1/jobs", json=body, headers=HEADERS, timeout=30)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 240
    while (job := httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=HEADERS, timeout=30).json())["status"] not in (
        "succeeded", "failed"
    ):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return dict(job)


def test_teach_train_eval_and_serve(stack: Stack, tiny_bert_dir: Path, tmp_path: Path) -> None:
    queries = tmp_path / "teach.jsonl"
    write_queries(queries)
    run_env = {**env(), "RERANKD_API_KEY": KEY, "RERANKD_API_URL": stack.url}
    work = stack.work

    # teach through the service's queue; SIGKILL after 3 queries, then the same command again
    teach = _cli("distill", "teach", str(queries), "-w", str(work), "--queue", "--model", "tiny",
                 "--strategy", "icr", "--concurrency", "1")  # fmt: skip
    journal = work / "teach" / "teach.trec.journal.jsonl"
    killed_at = kill_after(start(teach, run_env, tmp_path / "teach.log"), journal, 3)
    assert 3 <= killed_at < N_QUERIES
    before = journal.read_text().splitlines()[: killed_at + 1]
    start(teach, run_env, tmp_path / "teach.log").wait(300)
    check_journal_once(journal, N_QUERIES)
    after = journal.read_text().splitlines()
    assert after[: killed_at + 1] == before  # finished queries kept as they were, not redone
    assert json.loads(after[0])["settings"]["engine"] == "queue"

    # train a tiny BERT student; SIGKILL once checkpoint 3 is written, then the same command again
    train = _cli("distill", "train", "-w", str(work), "--base", str(tiny_bert_dir), "--epochs", "15",
                 "--batch-size", "1", "--save-steps", "1", "--device", "cpu", "--heldout", "0.25")  # fmt: skip
    proc = start(train, run_env, tmp_path / "train.log")
    ckpt = work / "student" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (ckpt / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait(30)
    assert start(train, run_env, tmp_path / "train.log").wait(600) == 0, (tmp_path / "train.log").read_text()[-3000:]
    card = json.loads((work / "student" / "rerankd-student.json").read_text())
    assert card["resumed_from_step"] >= 3 and card["steps"] == 15 * 9  # 9 training queries, 1 per step
    assert card["loss"] == "ranknet" and card["teacher"]["model"] == "tiny"
    assert len(card["heldout_queries"]) == 3 and not set(card["heldout_queries"]) & set(card["train_queries"])
    assert not ckpt.exists()
    # a rerun of a finished student trains nothing
    again = start(train, run_env, tmp_path / "train2.log")
    assert again.wait(300) == 0 and json.loads((work / "student" / "rerankd-student.json").read_text()) == card

    # eval on the held-out queries: student vs teacher vs first stage
    out = start(_cli("distill", "eval", str(work / "student"), "-o", str(work / "eval"), "--device", "cpu"),
                run_env, tmp_path / "eval.log")  # fmt: skip
    assert out.wait(300) == 0, (tmp_path / "eval.log").read_text()[-3000:]
    report = json.loads((work / "eval" / "report.json").read_text())
    assert report["queries"] == 3
    assert {"first_stage", "student", "teacher"} <= set(report["systems"])
    student = report["systems"]["student"]
    assert student["ms_per_query"] > 0 and -1 <= student["kendall_tau"] <= 1 and 0 <= student["agree_ndcg10"] <= 1
    assert report["systems"]["teacher"]["ms_per_query"] > 0

    # serve: a cross_encoder worker behind the Cohere route, by the alias and by the folder
    stack.stack.start_worker("student", str(work / "student"), "cross_encoder", concurrency=2)
    stack.stack.wait_workers([str(work / "student")], headers=HEADERS)
    docs = [f"{w} by the sea" for w in WORDS[:7]]
    resp = httpx.post(f"{stack.url}/v2/rerank", json={"model": "student", "query": "whales", "documents": docs},
                      headers=HEADERS, timeout=120)  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert sorted(r["index"] for r in resp.json()["results"]) == list(range(7))
    # the folder itself is a model name too (its strategy named: the global default is an LLM's)
    cands = [{"docid": f"d{i}", "text": t} for i, t in enumerate(docs)]
    job = _job(stack, {"model": str(work / "student"), "query": {"text": "whales"}, "candidates": cands,
                       "strategy": {"name": "pointwise"}})  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["result"]["strategy"] == "pointwise" and len(job["result"]["ranking"]) == 7

    # cascade on the LLM's worker: the student (loaded there, lazily) then ICR over its top 3
    body = {
        "model": "tiny",
        "query": {"text": "where are the whales"},
        "candidates": [{"docid": f"d{i}", "text": t} for i, t in enumerate(docs)],
        "strategy": {"name": "cascade", "student": str(work / "student"), "top_k": 3, "llm": {"name": "icr"}},
    }
    job = _job(stack, body)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["strategy"] == "cascade" and sorted(d["docid"] for d in result["ranking"]) == sorted(
        b["docid"] for b in body["candidates"]
    )
    assert {"student_s", "llm_s", "llm_attention_s"} <= set(result["timings"]), result["timings"]
    assert journaled(journal) == N_QUERIES
