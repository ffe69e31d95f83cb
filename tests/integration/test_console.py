"""The web console at /ui in a real browser (Playwright driving Debian's chromium, installed by
``make setup``) against the real stack: every page clicked through, no JS error allowed.

Screenshots of the pages go to the test's temporary folder only (for a look after a failure); the
docs' pictures come from a clean stack, not this test's: ``make screenshots`` (docs/ui/take_screenshots.py).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.chromium import CHROMIUM, FLAGS
from tests.support.stack import KEYS, Service

pytestmark = pytest.mark.integration

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def _job(service: Service, owner: str, n: int = 4, query: str = "capital of France") -> str:
    body = {
        "query": {"text": query},
        "candidates": [{"docid": f"d{i}", "text": f"passage {i} about the capital of country {i}"} for i in range(n)],
        "model": "tiny",
    }
    resp = httpx.post(f"{service.url}/v1/jobs", json=body, headers=service.headers(owner))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _batch(service: Service) -> str:
    lines = [
        {"custom_id": f"row-{i}", "body": {"query": {"text": f"q{i}"}, "candidates": [{"docid": "a", "text": "x"}]}}
        for i in range(3)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    resp = httpx.post(f"{service.url}/v1/batches?model=tiny", content=data, headers=service.headers())
    assert resp.status_code == 202, resp.text
    batch_id = str(resp.json()["id"])
    deadline = time.monotonic() + 120
    while httpx.get(f"{service.url}/v1/batches/{batch_id}", headers=service.headers()).json()["status"] != "completed":
        assert time.monotonic() < deadline, "batch did not complete"
        time.sleep(0.2)
    return batch_id


def test_console_pages(service: Service, browser: Any, tmp_path: Path) -> None:
    mine = [_job(service, "alice"), _job(service, "alice", n=6, query="largest city")]
    theirs = _job(service, "bob")
    for j in mine:
        assert service.wait_job(j)["status"] == "succeeded"
    batch_id = _batch(service)
    shots = tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

    # the key, entered once
    page.goto(f"{service.url}/ui")
    page.wait_for_selector("#key-page:not([hidden])")
    page.fill("#api-key", KEYS["alice"])
    page.click("#key-form button[type=submit]")

    # jobs: the live list holds alice's jobs only; a job shows its ranking, timings and history
    page.wait_for_selector(f"#jobs-table tr[data-job='{mine[1]}']")
    listed = page.eval_on_selector_all("#jobs-table tbody tr", "rows => rows.map(r => r.dataset.job)")
    assert set(mine) <= set(listed) and theirs not in listed
    page.select_option("#job-filters select[name=status]", "succeeded")
    page.wait_for_selector(f"#jobs-table tr[data-job='{mine[1]}']")
    page.click(f"#jobs-table tr[data-job='{mine[1]}']")
    page.wait_for_selector("#job-detail .ranking li")
    assert page.locator("#job-detail .ranking li").count() == 6
    assert page.locator("#job-detail .ranking .bar span").count() == 6
    history = page.locator("#job-detail .history li")
    assert history.count() >= 3  # queued, running, succeeded
    first = history.first.inner_text()
    assert re.match(r"^\d{1,2}:\d{2}:\d{2}\s+queued", first), first  # a clock time, not epoch seconds
    assert page.locator("#job-detail .timings dt").count() >= 1
    assert "largest city" in page.inner_text("#job-detail")
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)

    # queues and workers: depths, the live workers with heartbeats, throughput samples
    page.click("nav a[data-page=queues]")
    page.wait_for_selector("#workers-table tbody tr")
    assert page.locator("#queues-table tbody tr").count() >= 1
    workers_text = page.inner_text("#workers-table")
    assert "s ago" in workers_text and "wk_" in workers_text
    _job(service, "alice")  # something finishes while the page samples
    page.wait_for_function("document.querySelector('#throughput-now').textContent.includes('jobs/min')")
    page.wait_for_timeout(4500)  # two more samples
    minutes = httpx.get(f"{service.url}/v1/queues", headers=service.headers()).json()["throughput"]
    assert len(minutes) == 10 and sum(m["finished"] for m in minutes) >= 3  # this test's jobs, at least
    page.screenshot(path=str(shots / "queues.png"), full_page=True)

    # playground: a query and passages, a strategy and its settings -> ranking, scores and time
    page.click("nav a[data-page=playground]")
    page.wait_for_selector("#play-model option", state="attached")
    page.select_option("#play-model", "tiny")
    page.select_option("#play-strategy", "sliding_window")
    page.fill("#play-settings input[name=window_size]", "3")
    page.fill("#play-settings input[name=stride]", "1")
    page.fill("#play-query", "What is the capital of France?")
    passages = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany.", "Lyon is a city."]
    page.fill("#play-passages", "\n".join(passages))
    page.click("#play-run")
    page.wait_for_selector("#play-result .ranking li")
    assert page.locator("#play-result .ranking li").count() == len(passages)
    assert "end to end" in page.inner_text("#play-time")
    assert "succeeded" in page.inner_text("#play-result")
    page.screenshot(path=str(shots / "playground.png"), full_page=True)

    # batches: progress, and the results downloaded
    page.click("nav a[data-page=batches]")
    row = f"#batches-table tr[data-batch='{batch_id}']"
    page.wait_for_selector(f"{row} button.download")
    assert "3 / 3" in page.inner_text(row)
    with page.expect_download() as dl:
        page.click(f"{row} button.download")
    saved = tmp_path / "results.jsonl"
    dl.value.save_as(saved)
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["row-0", "row-1", "row-2"] and all("response" in r for r in rows)
    page.screenshot(path=str(shots / "batches.png"), full_page=True)

    assert errors == [], errors

    # a refused key sends the user back to the key page (the 401 itself is logged by the browser)
    page.evaluate("localStorage.setItem('rerankd.apiKey', 'wrong-key')")
    page.click("nav a[data-page=jobs]")
    page.reload()
    page.wait_for_selector("#key-page:not([hidden])")
    assert "refused" in page.inner_text("#key-error")
    assert not [e for e in errors if "401" not in e], errors
    context.close()
