"""Calibrated relevance through the real stack: a worker (tiny random model, ICR) that loads a
calibration file at start-up; its job results, the Cohere route (official SDK), the TEI route and
the console carry the probability; a missing or corrupt file stops the worker at start-up."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cohere
import httpx
import numpy as np
import pytest

from rerankd.calibration import Calibration, settings_key
from rerankd.calibration.maps import sigmoid
from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from rerankd.types import ICRConfig
from tests.support.stack import KEYS, Service

pytestmark = pytest.mark.integration

DOCS = [
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Berlin is the capital of Germany.",
    "Photosynthesis turns light into chemical energy.",
]
RELEVANT = "What is the capital of France?"
UNRELATED = "How do I bake sourdough bread at home?"
ICR = {"name": "icr"}


@dataclass
class Calibrated:
    url: str
    model: str
    calibration: Calibration
    stack: LocalStack

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS['alice']}"}

    def job(self, query: str, model: str = "tiny-cal", top_n: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "query": {"text": query},
            "candidates": [{"docid": f"d{i}", "text": t} for i, t in enumerate(DOCS)],
            "model": model,
        }
        if top_n is not None:
            body["top_n"] = top_n
        resp = httpx.post(f"{self.url}/v1/jobs", json=body, headers=self.headers(), timeout=30)
        assert resp.status_code == 202, resp.text
        return self.wait(str(resp.json()["id"]))

    def wait(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 240
        while True:
            job = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers(), timeout=30).json()
            if job["status"] not in ("queued", "running"):
                assert job["status"] == "succeeded", job
                return dict(job)
            assert time.monotonic() < deadline, job
            time.sleep(0.2)


def _raw_scores(service: Service) -> np.ndarray:
    """ICR scores of the tiny model on this test's documents (from the uncalibrated tiny worker)."""
    out = []
    for query in (RELEVANT, UNRELATED):
        body = {
            "query": {"text": query},
            "candidates": [{"docid": f"d{i}", "text": t} for i, t in enumerate(DOCS)],
            "model": "tiny",
            "strategy": ICR,
        }
        resp = httpx.post(f"{service.url}/v1/jobs", json=body, headers=service.headers(), timeout=30)
        assert resp.status_code == 202, resp.text
        job = service.wait_job(str(resp.json()["id"]), timeout=240)
        assert job["status"] == "succeeded", job
        out += [d["score"] for d in job["result"]["ranking"]]
    return np.array(out)


@pytest.fixture(scope="module")
def calibrated(
    service: Service, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Calibrated]:
    """The tiny model under its own path (its own queue), hosted by a worker with a calibration for
    its ICR scores (a Platt map scaled to the scores it produces), and an API that knows it as
    ``tiny-cal`` (ICR) next to ``tiny-icr`` (the uncalibrated tiny worker, ICR)."""
    tmp = tmp_path_factory.mktemp("calibrated")
    model = tmp / "tiny-cal"
    shutil.copytree(tiny_model_dir, model)
    raw = _raw_scores(service)
    cfg = ICRConfig().model_dump(mode="json")
    cal = Calibration(
        model=str(model),
        strategy="icr",
        settings=cfg,
        settings_key=settings_key(cfg),
        method="platt",
        features=["score"],
        params={"weights": [1.5], "bias": 0.0, "means": [float(raw.mean())], "sds": [float(raw.std()) or 1.0]},
    )
    path = cal.save(tmp / "cal.json")
    aliases = {
        **json.loads(service.env["RERANKD_ALIASES"]),
        "tiny-cal": {"model": str(model), "strategy": ICR},
        "tiny-icr": {"model": service.tiny_model, "strategy": ICR},
    }
    env = {**service.env, "RERANKD_ALIASES": json.dumps(aliases)}
    stack = LocalStack(env, tmp)
    try:
        stack.start_worker("tiny-cal", str(model), "hf", concurrency=2, extra_env={"RERANKD_CALIBRATIONS": str(path)})
        stack.start_api(free_port())
        stack.wait_workers([str(model)], headers={"Authorization": f"Bearer {KEYS['alice']}"})
        yield Calibrated(stack.url, str(model), cal, stack)
    finally:
        stack.stop()


def _expected(cal: Calibration, scores: list[float]) -> list[float]:
    p = cal.params
    return np.clip(sigmoid(p["weights"][0] * (np.array(scores) - p["means"][0]) / p["sds"][0]), 1e-3, 1 - 1e-3).tolist()


def test_worker_results_carry_calibrated_relevance(calibrated: Calibrated) -> None:
    job = calibrated.job(RELEVANT)
    result = job["result"]
    assert result["calibration"] == calibrated.calibration.id
    ranking = result["ranking"]
    rel = [d["relevance"] for d in ranking]
    assert rel == pytest.approx(_expected(calibrated.calibration, [d["score"] for d in ranking]))
    assert rel == sorted(rel, reverse=True)  # never reorders
    top = calibrated.job(RELEVANT, top_n=2)["result"]["ranking"]  # features over the whole ranking, then the cut
    assert [(d["docid"], d["relevance"]) for d in top] == [(d["docid"], d["relevance"]) for d in ranking[:2]]


def test_cohere_route_answers_the_probability(calibrated: Calibrated) -> None:
    client = cohere.ClientV2(base_url=calibrated.url, api_key=KEYS["alice"], timeout=240)
    answers = {q: client.rerank(model="tiny-cal", query=q, documents=DOCS) for q in (RELEVANT, UNRELATED)}
    for resp in answers.values():
        job = calibrated.wait(resp.id)["result"]["ranking"]
        assert [(r.index, r.relevance_score) for r in resp.results] == [(int(d["docid"]), d["relevance"]) for d in job]
    relevant, unrelated = ([r.relevance_score for r in answers[q].results] for q in (RELEVANT, UNRELATED))
    assert relevant != unrelated  # the same documents, another query: other probabilities
    # uncalibrated (the tiny worker, same strategy): the rank map, the same numbers for both queries
    plain = [
        [r.relevance_score for r in client.rerank(model="tiny-icr", query=q, documents=DOCS).results]
        for q in (RELEVANT, UNRELATED)
    ]
    assert plain[0] == plain[1] == [1.0, 0.75, 0.5, 0.25]
    # the answer says which, and the strategy's raw score is there on request (extensions the SDK ignores)
    body = {"model": "tiny-cal", "query": RELEVANT, "documents": DOCS, "raw_scores": True}
    raw = httpx.post(f"{calibrated.url}/v2/rerank", json=body, headers=calibrated.headers(), timeout=240).json()
    assert raw["meta"]["relevance"] == {"kind": "calibrated", "calibration": calibrated.calibration.id}
    job = calibrated.wait(raw["id"])["result"]["ranking"]
    assert [r["raw_score"] for r in raw["results"]] == [d["score"] for d in job]
    other = httpx.post(
        f"{calibrated.url}/v1/rerank", json={**body, "model": "tiny-icr"}, headers=calibrated.headers(), timeout=240
    ).json()
    assert other["meta"]["relevance"] == {"kind": "rank"}


def test_tei_route_answers_the_probability(calibrated: Calibrated) -> None:
    url = f"{calibrated.url}/rerank"
    body = {"query": RELEVANT, "texts": DOCS, "model": "tiny-cal"}
    resp = httpx.post(url, json=body, headers=calibrated.headers(), timeout=240)
    assert resp.headers["X-Rerankd-Relevance"] == "calibrated"
    rows = resp.json()
    assert all(set(r) == {"index", "score"} for r in rows)  # TEI's shape
    raw = httpx.post(url, json={**body, "raw_scores": True}, headers=calibrated.headers(), timeout=240).json()
    assert [r["index"] for r in raw] == [r["index"] for r in rows]
    assert [r["score"] for r in rows] == pytest.approx(_expected(calibrated.calibration, [r["score"] for r in raw]))
    plain = httpx.post(url, json={**body, "model": "tiny-icr"}, headers=calibrated.headers(), timeout=240)
    assert plain.headers["X-Rerankd-Relevance"] == "rank" and [r["score"] for r in plain.json()] == [
        1.0,
        0.75,
        0.5,
        0.25,
    ]


def test_console_shows_relevance_beside_score(calibrated: Calibrated) -> None:
    from tests.support.chromium import CHROMIUM, FLAGS

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    job = calibrated.job(RELEVANT)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{calibrated.url}/ui")
            page.wait_for_selector("#key-page:not([hidden])")
            page.fill("#api-key", KEYS["alice"])
            page.click("#key-form button[type=submit]")
            page.wait_for_selector(f"#jobs-table tr[data-job='{job['id']}']")
            page.click(f"#jobs-table tr[data-job='{job['id']}']")
            page.wait_for_selector("#job-detail .ranking li")
            shown = page.eval_on_selector_all("#job-detail .ranking .relevance", "els => els.map(e => e.textContent)")
            want = [f"P {d['relevance']:.3f}" for d in job["result"]["ranking"]]
            assert shown == want
            assert calibrated.calibration.id in page.inner_text("#job-detail .relevance-note")
        finally:
            browser.close()


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_worker_refuses_to_start_with_a_bad_calibration_file(
    service: Service, tiny_model_dir: Path, tmp_path: Path, problem: str
) -> None:
    path = tmp_path / f"{problem}.json"
    if problem == "corrupt":
        path.write_text('{"rerankd_calibration": 1, "model": "x", "strategy": ')
    stack = LocalStack(service.env, tmp_path)
    try:
        proc = stack.start_worker("bad", str(tiny_model_dir), "hf", extra_env={"RERANKD_CALIBRATIONS": str(path)})
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker kept running with a bad calibration file")
        log = (tmp_path / "worker-bad.log").read_text()
        assert code != 0
        assert f"calibration file {path}" in log
        assert ("does not exist" if problem == "missing" else "not valid JSON") in log
    finally:
        stack.stop()
