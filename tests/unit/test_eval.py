"""`rerankd eval` on the real NovelEval runs: per-query scores, coverage, paired comparison, JSON, plot."""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.eval import bootstrap_ci, compare, score_run

NOVELEVAL = Path(__file__).resolve().parents[2] / "examples" / "noveleval"
QRELS = NOVELEVAL / "qrels.txt"
FIRST = NOVELEVAL / "run.txt"  # first stage, nDCG@10 0.6503
ICR = NOVELEVAL / "run.icr-smollm2.txt"  # ICR with SmolLM2-135M (see the example's README)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["eval", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def partial_run(tmp_path: Path) -> Path:
    """The first stage restricted to its first 12 queries (as a run made with --limit 12)."""
    keep = list(dict.fromkeys(line.split()[0] for line in FIRST.read_text().splitlines()))[:12]
    out = tmp_path / "partial.trec"
    out.write_text("".join(line + "\n" for line in FIRST.read_text().splitlines() if line.split()[0] in keep))
    return out


def test_single_run_matches_ir_measures() -> None:
    code, out, err = invoke(str(FIRST), "--qrels", str(QRELS))
    assert code == 0, err
    assert out.splitlines()[0] == "nDCG@10\t0.6503"
    assert err == ""  # the first stage covers every judged query: no warning


def test_partial_run_scores_only_its_queries_and_warns(partial_run: Path) -> None:
    qrels = list(ir_measures.read_trec_qrels(str(QRELS)))
    run = list(ir_measures.read_trec_run(str(partial_run)))
    covered = {r.query_id for r in run}
    # trec_eval without -c: the mean over the run's judged queries only
    only_run = ir_measures.calc_aggregate([nDCG @ 10], [q for q in qrels if q.query_id in covered], run)[nDCG @ 10]
    # trec_eval -c (what ir_measures does by default): missing queries count 0
    all_qrels = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert all_qrels < only_run

    code, out, err = invoke(str(partial_run), "--qrels", str(QRELS))
    assert code == 0
    assert out.splitlines()[0] == f"nDCG@10\t{only_run:.4f}"
    assert "covers 12 of the 21 judged queries" in err and "--all-qrels-queries" in err

    code, out, err = invoke(str(partial_run), "--qrels", str(QRELS), "--all-qrels-queries")
    assert code == 0
    assert out.splitlines()[0] == f"nDCG@10\t{all_qrels:.4f}"
    assert "averaging over all 21" in err


def test_per_query_table_one_run() -> None:
    code, out, _ = invoke(str(ICR), "--qrels", str(QRELS), "--per-query")
    assert code == 0
    rows = out.split("\n\n", 1)[1].splitlines()
    assert rows[0] == "qid\tnDCG@10\tAP@100\tR@20\tR@100"
    assert len(rows) == 1 + 21
    per_query = {r.split("\t")[0]: float(r.split("\t")[1]) for r in rows[1:]}
    mean = float(out.splitlines()[0].split("\t")[1])
    assert abs(np.mean(list(per_query.values())) - mean) < 1e-4


def test_two_runs_paired_difference() -> None:
    a, b = score_run(FIRST, QRELS), score_run(ICR, QRELS)
    c = compare(a, b, "nDCG@10")
    deltas = np.array([b.per_query[q]["nDCG@10"] - a.per_query[q]["nDCG@10"] for q in a.queries])
    assert c.queries == 21
    assert c.delta == pytest.approx(b.mean("nDCG@10") - a.mean("nDCG@10"))
    assert c.delta == pytest.approx(deltas.mean())
    assert c.ci_low <= c.delta <= c.ci_high
    assert (c.wins, c.ties, c.losses) == (int((deltas > 0).sum()), int((deltas == 0).sum()), int((deltas < 0).sum()))
    assert c.wins + c.ties + c.losses == 21
    assert compare(a, b, "nDCG@10") == c  # fixed seed: the same interval every time

    code, out, err = invoke(str(FIRST), str(ICR), "--qrels", str(QRELS), "--per-query")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("A = ") and lines[1].startswith("B = ")
    row = next(line for line in lines if line.startswith("nDCG@10 "))
    assert f"{c.delta:+.4f}" in row and f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]" in row
    assert row.endswith(f"{c.wins}/{c.ties}/{c.losses}")
    per_query = out.split("\n\n", 1)[1].splitlines()
    assert per_query[0] == "qid\tnDCG@10 A\tnDCG@10 B\tdelta" and len(per_query) == 22


def test_identical_runs_tie_everywhere() -> None:
    a = score_run(FIRST, QRELS)
    c = compare(a, a, "nDCG@10")
    assert (c.wins, c.ties, c.losses, c.delta, c.ci_low, c.ci_high) == (0, 21, 0, 0.0, 0.0, 0.0)


def test_bootstrap_interval_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.1, 0.2, 20), rng.normal(0.1, 0.2, 400)
    lo1, hi1 = bootstrap_ci(few)
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi1 - lo1
    assert lo2 < 0.1 < hi2


def test_json_and_plot(tmp_path: Path, partial_run: Path) -> None:
    png = tmp_path / "deltas.png"
    code, out, err = invoke(str(FIRST), str(partial_run), "--qrels", str(QRELS), "--json", "--plot", str(png))
    assert code == 0, err
    data = json.loads(out)
    assert [r["queries"] for r in data["runs"]] == [21, 12]
    assert len(data["runs"][1]["missing_queries"]) == 9
    cmp = data["comparison"]["measures"]["nDCG@10"]
    assert cmp["queries"] == 12 and cmp["ties"] == 12  # the same ranking on the common queries
    assert data["comparison"]["bootstrap"] == {"samples": 10000, "seed": 0, "confidence": 0.95}
    assert "runs cover different queries" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_name_the_problem(tmp_path: Path) -> None:
    code, _, err = invoke(str(FIRST), str(FIRST), str(FIRST), "--qrels", str(QRELS))
    assert code == 2 and "one run or two" in err
    code, _, err = invoke(str(tmp_path / "nope.trec"), "--qrels", str(QRELS))
    assert code == 2 and "run file not found" in err
    code, _, err = invoke(str(FIRST), "--qrels", str(QRELS), "--measure", "P@5")
    assert code == 2 and "--measure" in err
