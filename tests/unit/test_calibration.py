"""Calibration: maps recover known curves, never reorder, fit from journals, load or fail clearly,
apply in strategies/worker results and in the Cohere answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rerankd.calibration import Calibration, CalibrationError, rank_score, settings_key
from rerankd.calibration.fit import fit_calibration
from rerankd.calibration.maps import IsotonicMap, PlattMap, pav, sigmoid
from rerankd.calibration.metrics import brier, ece, log_loss
from rerankd.calibration.store import default_dir, load_calibrations
from rerankd.runs import ResumableRun
from rerankd.types import (
    Candidate,
    FirstConfig,
    ICRConfig,
    Query,
    RankedDoc,
    RerankRequest,
    RerankResult,
    SlidingWindowConfig,
)
from tests.support.scripted_engine import ScriptedEngine

ICR = ICRConfig()


def _synthetic(n_queries: int, seed: int, curve: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per query 20 scores (with a per-query offset) and labels drawn from ``curve(score)``."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(n_queries):
        s = np.sort(rng.normal(rng.normal(0, 0.5), 1.0, size=20))[::-1]
        scores.append(s)
        labels.append((rng.random(20) < curve(s)).astype(np.int8))
    return scores, labels


def _calibration(method: str = "platt", features: list[str] | None = None, **params: Any) -> Calibration:
    features = features or ["score"]
    if not params:
        params = (
            {
                "weights": [2.0] * len(features),
                "bias": -1.0,
                "means": [0.0] * len(features),
                "sds": [1.0] * len(features),
            }
            if method == "platt"
            else {"xs": [-1.0, 0.0, 1.0], "ys": [0.1, 0.4, 0.9]}
        )
    cfg = ICR.model_dump(mode="json")
    return Calibration(
        model="m", strategy="icr", settings=cfg, settings_key=settings_key(cfg), method=method, features=features,
        params=params,
    )  # fmt: skip


# --------------------------------------------------------------------------- maps


def test_platt_recovers_a_known_curve() -> None:
    def curve(s: np.ndarray) -> np.ndarray:
        return sigmoid(2.0 * s - 1.0)

    scores, labels = _synthetic(600, 0, curve)
    s, y = np.concatenate(scores), np.concatenate(labels)
    m = PlattMap.fit({"score": s}, y, ["score"])
    grid = np.linspace(-2, 2, 21)
    assert np.abs(m.predict({"score": grid}) - curve(grid)).max() < 0.03
    assert m.weights[0] / m.sds[0] == pytest.approx(2.0, abs=0.15)


def test_isotonic_recovers_a_known_curve_and_matches_sklearn() -> None:
    def curve(s: np.ndarray) -> np.ndarray:  # monotone, not a sigmoid: Platt cannot follow it
        return np.clip(0.05 + 0.3 * (s > -0.5) + 0.5 * (s > 1.0), 0, 1)

    scores, labels = _synthetic(600, 1, curve)
    s, y = np.concatenate(scores), np.concatenate(labels)
    m = IsotonicMap.fit({"score": s}, y, "score")
    grid = np.array([-2.0, -1.2, -0.9, 0.0, 0.5, 1.5, 2.0])  # away from the steps
    assert np.abs(m.predict({"score": grid}) - curve(grid)).max() < 0.06
    from sklearn.isotonic import IsotonicRegression

    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    assert np.allclose(np.interp(grid, *pav(s, y)), ref.predict(grid))


def test_platt_keeps_weights_non_negative() -> None:
    rng = np.random.default_rng(2)
    s = rng.normal(size=4000)
    y = (rng.random(s.size) < sigmoid(1.5 * s)).astype(float)
    m = PlattMap.fit({"score": s, "zscore": -s + rng.normal(0, 0.1, s.size)}, y, ["score", "zscore"])
    assert m.features == ["score", "zscore"] and m.weights[1] == 0.0 and m.weights[0] > 0


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
    method=st.sampled_from(["platt", "isotonic"]),
    feature=st.sampled_from(["score", "zscore", "rank"]),
    w=st.floats(0, 50),
)
def test_calibration_never_reorders(scores: list[float], method: str, feature: str, w: float) -> None:
    cal = _calibration(
        method, [feature], **({"weights": [w], "bias": 0.3, "means": [0.1], "sds": [2.0]} if method == "platt" else {})
    )
    ranked = sorted(scores, reverse=True)
    result = RerankResult(
        ranking=[RankedDoc(docid=f"d{i}", rank=i + 1, score=s, first_stage_rank=i + 1) for i, s in enumerate(ranked)],
        strategy="icr",
        model="m",
    )
    out = cal.apply(result)
    rel = [d.relevance for d in out.ranking]
    assert out.docids == result.docids and [d.score for d in out.ranking] == ranked
    assert all(r is not None and 0.0 < r < 1.0 for r in rel)
    assert rel == sorted(rel, reverse=True)  # type: ignore[type-var]
    assert out.calibration == cal.id


def test_metrics() -> None:
    y = np.array([1, 0, 1, 0])
    assert brier(np.array([1.0, 0.0, 1.0, 0.0]), y) == 0.0
    assert brier(np.full(4, 0.5), y) == 0.25 and log_loss(np.full(4, 0.5), y) == pytest.approx(np.log(2))
    assert ece(np.full(4, 0.5), y) == 0.0 and ece(np.full(4, 0.9), y) == pytest.approx(0.4)


def test_rank_score_is_the_documented_map() -> None:
    assert [rank_score(r, 4) for r in range(1, 5)] == [1.0, 0.75, 0.5, 0.25]


# --------------------------------------------------------------------------- fitting from journals


def _journal(tmp: Path, name: str, scores: list[np.ndarray], cfg: Any = ICR, model: str = "m") -> Path:
    reqs, results = [], []
    for q, s in enumerate(scores):
        cands = [Candidate(docid=f"q{q}d{i}", text="x") for i in range(s.size)]
        reqs.append(RerankRequest(query=Query(qid=f"{name}{q}", text="q"), candidates=cands, strategy=cfg))
        ranking = [
            RankedDoc(docid=f"q{q}d{i}", rank=i + 1, score=float(v), first_stage_rank=i + 1) for i, v in enumerate(s)
        ]
        results.append(RerankResult(qid=f"{name}{q}", ranking=ranking, strategy=cfg.name, model=model))
    run = ResumableRun(
        reqs, tmp / f"{name}.trec", settings={"strategy": cfg.model_dump(mode="json"), "model": model}, progress=False
    )
    run.open()
    for i, r in enumerate(results):
        run.record(i, r)
    run.finish()
    return run.journal


def _qrels(tmp: Path, name: str, labels: list[np.ndarray], graded: bool = True, unjudged: bool = False) -> Path:
    lines = []
    for q, lab in enumerate(labels):
        for i, v in enumerate(lab):
            if unjudged and i % 7 == 6:
                continue  # some passages unjudged: counted not relevant
            grade = (2 if v else 1) if graded else int(v)
            lines.append(f"{name}{q} 0 q{q}d{i} {grade}\n")
    path = tmp / f"{name}.qrels"
    path.write_text("".join(lines))
    return path


def test_fit_from_journals_recovers_the_curve(tmp_path: Path) -> None:
    def curve(s: np.ndarray) -> np.ndarray:
        return sigmoid(1.5 * s - 0.5)

    scores, labels = _synthetic(300, 3, curve)
    a = _journal(tmp_path, "a", scores[:200])
    b = _journal(tmp_path, "b", scores[200:])
    qa, qb = _qrels(tmp_path, "a", labels[:200]), _qrels(tmp_path, "b", labels[200:])
    cal, report = fit_calibration([a, b], [qa, qb], grade=2, heldout=0.25)
    assert report.queries == 300 and report.heldout_queries == 75 and report.passages == 6000
    assert report.positives == int(sum(lab.sum() for lab in labels)) and report.unjudged == 0
    assert cal.model == "m" and cal.strategy == "icr" and cal.settings_key == settings_key(ICR)
    assert report.heldout["brier"] < report.heldout_rank_map["brier"]
    assert report.heldout["ece"] < report.heldout_rank_map["ece"]
    # the fitted probabilities follow the curve that drew the labels
    platt, _ = fit_calibration([a, b], [qa, qb], grade=2, method="platt", features=["score"])
    grid = np.linspace(-1.5, 1.5, 7)
    assert np.abs(platt.map.predict({"score": grid}) - curve(grid)).max() < 0.05
    # graded qrels: with grade 1 counted relevant every judged passage is; unjudged ones are not
    qu = _qrels(tmp_path, "a", labels[:200], unjudged=True)
    low, rep = fit_calibration([a], [qu], grade=1, method="platt", features=["score"])
    assert rep.unjudged == 200 * 2 and low.fit["positives"] == 200 * 18


def test_journals_of_other_settings_are_not_mixed(tmp_path: Path) -> None:
    s, lab = _synthetic(5, 4, lambda x: sigmoid(x))
    a = _journal(tmp_path, "a", s)
    b = _journal(tmp_path, "b", s, cfg=ICRConfig(max_words_per_passage=50))
    with pytest.raises(CalibrationError, match="differs from the first journal"):
        fit_calibration([a, b], [_qrels(tmp_path, "a", lab), _qrels(tmp_path, "b", lab)])


def test_generation_strategies_calibrate_on_rank_features(tmp_path: Path) -> None:
    scores = [np.array([rank_score(r, 10) for r in range(1, 11)]) for _ in range(40)]
    labels = [(np.arange(10) < 3).astype(np.int8) for _ in range(40)]
    j = _journal(tmp_path, "g", scores, cfg=SlidingWindowConfig())
    cal, report = fit_calibration([j], [_qrels(tmp_path, "g", labels, graded=False)])
    assert cal.features == ["rank"] and {tuple(c["features"]) for c in report.cv} == {("rank",)}


def test_calibrate_command_writes_beside_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rerankd.cli import app

    monkeypatch.setenv("RERANKD_CACHE_DIR", str(tmp_path / "cache"))
    scores, labels = _synthetic(40, 5, lambda s: sigmoid(2 * s))
    j = _journal(tmp_path, "c", scores, model="smollm2-135m-instruct")
    q = _qrels(tmp_path, "c", labels)
    out = CliRunner().invoke(app, ["calibrate", str(j), "--qrels", str(q), "--grade", "2"])
    assert out.exit_code == 0, out.output
    assert "held-out queries: 8" in out.output and "rank map" in out.output
    folder = default_dir("smollm2-135m-instruct")
    assert folder == tmp_path / "cache" / "models" / "smollm2-135m-instruct.calibrations"
    files = list(folder.glob("*.json"))
    assert [f.name for f in files] == [f"icr-{settings_key(ICR)}.json"]
    found = load_calibrations("smollm2-135m-instruct", None)
    assert len(found) == 1 and found.find(ICR) is not None and found.find(ICRConfig(doc_order="first_stage")) is None
    bad = CliRunner().invoke(app, ["calibrate", str(j), "--qrels", str(q), "--qrels", str(q)])
    assert bad.exit_code == 2 and "one per journal" in bad.output


# --------------------------------------------------------------------------- loading


def test_missing_or_corrupt_files_are_errors_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(CalibrationError, match=str(missing)):
        load_calibrations("m", [str(missing)])
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"rerankd_calibration": 1, "model": ')
    with pytest.raises(CalibrationError, match=rf"{corrupt}.*not valid JSON"):
        load_calibrations("m", [str(corrupt)])
    good = _calibration().save(tmp_path / "good.json")
    data = json.loads(good.read_text())
    for change, words in (
        ({"params": {"xs": [1.0, 0.0], "ys": [0.1, 0.2]}, "method": "isotonic"}, "non-decreasing"),
        ({"params": {"weights": [-1.0], "bias": 0.0, "means": [0.0], "sds": [1.0]}}, "weights must be >= 0"),
        ({"settings_key": "0" * 16}, "does not match its settings"),
        ({"features": ["bm25"]}, "unknown features"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**data, **change}))
        with pytest.raises(CalibrationError, match=rf"{bad}.*{words}"):
            load_calibrations("m", [str(bad)])
    with pytest.raises(CalibrationError, match=rf"{good}.*for model 'm'; this worker hosts 'other'"):
        load_calibrations("other", [str(good)])
    folder = tmp_path / "dir"
    folder.mkdir()
    _calibration().save(folder / "a.json")
    _calibration().save(folder / "b.json")
    with pytest.raises(CalibrationError, match="both for m icr"):
        load_calibrations("m", [str(folder)])
    assert len(load_calibrations("m", [])) == 0 and len(load_calibrations("m", None, cache_dir=tmp_path)) == 0


def test_worker_start_fails_on_a_missing_calibration_before_loading_the_engine(tmp_path: Path) -> None:
    from rerankd.config import Settings
    from rerankd.worker.host import EngineHost

    missing = tmp_path / "missing.json"
    host = EngineHost(Settings(engine="no.such.module:Engine", calibrations=[str(missing)]))
    with pytest.raises(CalibrationError, match=str(missing)):
        host.start()  # the engine named here could not even be imported: calibrations come first


# --------------------------------------------------------------------------- applying


def _first_request(top_n: int | None = None) -> RerankRequest:
    cands = [Candidate(docid=f"d{i}", text=f"passage {i} rel={i % 4}") for i in range(8)]
    return RerankRequest(query=Query(qid="q", text="q"), candidates=cands, strategy=FirstConfig(), top_n=top_n)


def _first_calibration() -> Calibration:
    cfg = FirstConfig().model_dump(mode="json")
    params = {"weights": [3.0, 1.0], "bias": -0.5, "means": [0.1, 0.0], "sds": [0.05, 1.0]}
    return Calibration(
        model="scripted-oracle", strategy="first", settings=cfg, settings_key=settings_key(cfg), method="platt",
        features=["score", "zscore"], params=params,
    )  # fmt: skip


def test_rerank_applies_the_calibration_before_the_top_n_cut() -> None:
    from rerankd.strategies import rerank

    cal = _first_calibration()
    plain = asyncio.run(rerank(_first_request(), ScriptedEngine()))
    full = asyncio.run(rerank(_first_request(), ScriptedEngine(), calibration=cal))
    top = asyncio.run(rerank(_first_request(top_n=3), ScriptedEngine(), calibration=cal))
    assert plain.calibration is None and all(d.relevance is None for d in plain.ranking)
    assert full.docids == plain.docids and [d.score for d in full.ranking] == [d.score for d in plain.ranking]
    s = np.array([d.score for d in plain.ranking])
    z = (s - s.mean()) / s.std()
    want = sigmoid(-0.5 + 3.0 * (s - 0.1) / 0.05 + z)
    assert [d.relevance for d in full.ranking] == pytest.approx(np.clip(want, 1e-3, 1 - 1e-3).tolist())
    assert top.docids == full.docids[:3] and [d.relevance for d in top.ranking] == [
        d.relevance for d in full.ranking[:3]
    ]
    assert full.calibration == cal.id == top.calibration


def test_cohere_answer_uses_the_probability_and_says_so() -> None:
    from rerankd.api import cohere

    body = cohere.CohereRerankRequest(query="q", documents=["a", "b", "c"], raw_scores=True)
    ranking = [
        RankedDoc(docid="2", rank=1, score=5.0, first_stage_rank=3),
        RankedDoc(docid="0", rank=2, score=1.0, first_stage_rank=1),
        RankedDoc(docid="1", rank=3, score=-2.0, first_stage_rank=2),
    ]
    plain = RerankResult(ranking=ranking, strategy="icr", model="m")
    out = cohere.response("job_1", body, plain, "2")
    assert [r["relevance_score"] for r in out["results"]] == [1.0, 1 - 1 / 3, 1 - 2 / 3]
    assert [r["raw_score"] for r in out["results"]] == [5.0, 1.0, -2.0]
    assert out["meta"]["relevance"] == {"kind": "rank"}
    calibrated = _calibration().apply(plain)
    out = cohere.response("job_1", body, calibrated, "2")
    assert [r["relevance_score"] for r in out["results"]] == [d.relevance for d in calibrated.ranking]
    assert out["meta"]["relevance"] == {"kind": "calibrated", "calibration": calibrated.calibration}
    body.raw_scores = False
    assert all("raw_score" not in r for r in cohere.response("job_1", body, calibrated, "2")["results"])


def test_score_strategies_are_not_calibrated_on_the_position_alone(tmp_path: Path) -> None:
    """Raw scores that are lower in queries with more relevant passages (as attention mass spread
    over them): given the rank, the score's weight comes out negative, so a Platt fit on score+rank
    is a map of the position alone, the same numbers for every query; it is left out."""
    rng = np.random.default_rng(6)
    many = rng.integers(1, 12, size=120)
    scores = [np.sort(rng.normal(0, 1.0, size=20))[::-1] - 0.8 * k for k in many]
    labels = [(rng.random(20) < np.where(np.arange(20) < k, 0.9, 0.05)).astype(np.int8) for k in many]
    j = _journal(tmp_path, "p", scores)
    cal, report = fit_calibration([j], [_qrels(tmp_path, "p", labels, graded=False)])
    assert all(c["features"] != ["rank"] or c["method"] == "platt" for c in report.cv)
    assert any(not c["uses_score"] for c in report.cv)  # position-only fits were seen and left out
    chosen = next(c for c in report.cv if c["method"] == cal.method and c["features"] == cal.features)
    assert chosen["uses_score"] and cal.features != ["rank"]
    forced, _ = fit_calibration(
        [j], [_qrels(tmp_path, "p", labels, graded=False)], method="isotonic", features=["rank"]
    )
    assert forced.features == ["rank"]  # asked for explicitly: allowed
