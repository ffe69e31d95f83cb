"""The command line end to end with the real default model (SmolLM2-135M) on NovelEval."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOVELEVAL = REPO / "examples" / "noveleval"


def rerankd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rerankd", *args], capture_output=True, text=True, cwd=REPO, timeout=900
    )


def first_stage(limit: int, top_k: int) -> dict[str, list[str]]:
    out = {}
    with (NOVELEVAL / "candidates.jsonl").open() as fh:
        for line in list(fh)[:limit]:
            obj = json.loads(line)
            out[obj["qid"]] = [c["docid"] for c in obj["candidates"][:top_k]]
    return out


def read_run(path: Path) -> dict[str, list[tuple[int, str, float]]]:
    runs: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        runs[qid].append((int(rank), docid, float(score)))
    return runs


@pytest.mark.parametrize(
    ("strategy", "params", "top_k"),
    [
        ("sliding_window", ["window_size=4", "stride=2"], 8),
        ("full_ranking", [], 6),
        ("first", ["window_size=4", "stride=2"], 8),
        ("icr", [], 8),
    ],
)
def test_rerank_three_noveleval_queries(
    tmp_path: Path, smollm2_dir: Path, strategy: str, params: list[str], top_k: int
) -> None:
    out = tmp_path / "run.trec"
    args = ["rerank", str(NOVELEVAL / "candidates.jsonl"), "-o", str(out), "--strategy", strategy]
    args += ["--limit", "3", "--top-k", str(top_k)]
    for p in params:
        args += ["-p", p]
    proc = rerankd(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = first_stage(3, top_k)
    runs = read_run(out)
    assert list(runs) == list(expected)
    for qid, rows in runs.items():
        assert sorted(d for _, d, _ in rows) == sorted(expected[qid]), qid
        assert [r for r, _, _ in rows] == list(range(1, top_k + 1))
        scores = [s for _, _, s in rows]
        assert all(a >= b for a, b in itertools.pairwise(scores))

    ev = rerankd("eval", str(out), "--qrels", str(NOVELEVAL / "qrels.txt"))
    assert ev.returncode == 0, ev.stderr
    measures = dict(line.split("\t") for line in ev.stdout.strip().splitlines())
    assert set(measures) == {"nDCG@10", "AP@100", "R@20", "R@100"}
    assert 0.0 <= float(measures["nDCG@10"]) <= 1.0


def test_icr_layer_window_and_engine_options(tmp_path: Path, smollm2_dir: Path) -> None:
    """`-p layers=` with the engine flags: the window's early exit runs end to end."""
    base = ["rerank", str(NOVELEVAL / "candidates.jsonl"), "--strategy", "icr", "--limit", "2", "--top-k", "6"]
    flags = ["--device", "cpu", "--dtype", "float32", "-e", "max_batch_size=2", "--concurrency", "2"]
    out = tmp_path / "run.trec"
    proc = rerankd(*base, "-o", str(out), "-p", "layers=4:16", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = read_run(out)
    assert {qid: sorted(d for _, d, _ in rows) for qid, rows in runs.items()} == {
        qid: sorted(docids) for qid, docids in first_stage(2, 6).items()
    }
    bad = rerankd(*base, "-o", str(tmp_path / "bad.trec"), "-p", "layers=4:99", *flags)
    assert bad.returncode == 2
    assert "layers 4:99 ends past the 30 layers of smollm2-135m-instruct" in bad.stderr


def test_malformed_input_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = (NOVELEVAL / "candidates.jsonl").read_text().splitlines()[0]
    bad.write_text(good + "\n" + '{"qid": "x", "query": "q", "candidates": [{"text": "no id"}]}\n')
    proc = rerankd("rerank", str(bad), "-o", str(tmp_path / "o.trec"))
    assert proc.returncode == 2
    assert f"{bad}:2:" in proc.stderr and "docid" in proc.stderr

    bad.write_text("{not json\n")
    proc = rerankd("rerank", str(bad), "-o", str(tmp_path / "o.trec"))
    assert proc.returncode == 2 and f"{bad}:1: invalid JSON" in proc.stderr


def test_unknown_or_bad_strategy_setting_is_an_error(tmp_path: Path) -> None:
    args = ["rerank", str(NOVELEVAL / "candidates.jsonl"), "-o", str(tmp_path / "o.trec")]
    proc = rerankd(*args, "-p", "stride=0")
    assert proc.returncode == 2
    assert "stride must be between 1 and window_size (20), got 0" in proc.stderr
    proc = rerankd(*args, "--strategy", "icr", "-p", "window_size=20")
    assert proc.returncode == 2 and "'window_size' is not a setting of strategy 'icr'" in proc.stderr
