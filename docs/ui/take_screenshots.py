"""Take the console's pictures in docs/ui (``make screenshots``) on a clean private stack.

``rerankd up`` as a user runs it (the default model, smollm2-135m-instruct from ``make models``, the
hf engine), started like ``rerankd demo`` starts it (:mod:`rerankd.launchers.demo_stack`): a free
loopback port, a temporary data folder, none of the user's ``RERANKD_*`` settings, one API key.
A few jobs and one small batch go through the API first, then Debian's chromium (driven by the
``playwright`` package; never ``playwright install``) runs the playground and saves jobs.png,
queues.png, playground.png and batches.png. The stack is stopped at the end, also on Ctrl-C.

Run from the repository root: ``.venv/bin/python docs/ui/take_screenshots.py [--out docs/ui]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.support.chromium: the browser and flags the console's tests use

from rerankd.launchers.demo_stack import DemoStack, demo_env, interruptible, shield  # noqa: E402
from rerankd.models.registry import DEFAULT_MODEL  # noqa: E402
from tests.support.chromium import CHROMIUM, FLAGS  # noqa: E402

TIMEOUT_MS = 300_000  # a busy CPU runs the 135M model slowly
FINAL = ("succeeded", "failed", "cancelled", "expired")

JOBS: list[tuple[str, list[str], dict[str, Any] | None]] = [
    (
        "What causes the northern lights?",
        [
            "Auroras are caused by charged particles from the solar wind colliding with gases in the upper atmosphere.",
            "The Northern Lights are best seen in Norway, Iceland and Finland between September and March.",
            "Oxygen atoms emit the green light of an aurora, nitrogen the blue and purple hues.",
            "A solar eclipse happens when the Moon passes between the Sun and the Earth.",
            "Earth's magnetic field guides the solar particles toward the polar regions.",
            "Rainbows form when sunlight is refracted, reflected and dispersed in water droplets.",
        ],
        {"name": "icr"},
    ),
    (
        "How do I reset a forgotten Linux root password?",
        [
            "Boot into single-user mode from the GRUB menu and run passwd to set a new root password.",
            "Linux is a family of open-source operating systems based on the Linux kernel.",
            "Use `sudo passwd root` from an account with sudo rights to change the root password.",
            "To reset a Windows password, use a password reset disk or another administrator account.",
            "A strong password has at least 12 characters mixing letters, digits and symbols.",
        ],
        None,
    ),
    (
        "health benefits of green tea",
        [
            "Green tea is rich in catechins, antioxidants that may protect cells from damage.",
            "Black tea is fully oxidised, which gives it a darker colour and stronger flavour.",
            "Studies link regular green tea drinking to a lower risk of heart disease.",
            "Matcha is a powdered green tea traditionally used in the Japanese tea ceremony.",
            "Coffee contains more caffeine per cup than green tea.",
            "The L-theanine in green tea may improve attention and reduce stress.",
        ],
        {"name": "icr"},
    ),
    (
        "When was the Eiffel Tower built?",
        [
            "The Eiffel Tower was built between 1887 and 1889 as the entrance arch of the 1889 World's Fair.",
            "The Statue of Liberty was a gift from France to the United States, dedicated in 1886.",
            "Gustave Eiffel's company designed and built the tower, 330 metres tall today.",
            "Paris is the capital and largest city of France.",
        ],
        None,
    ),
]

BATCH = [
    (
        "best way to store fresh basil",
        [
            "Keep basil stems in a glass of water at room temperature.",
            "Basil is a herb of the mint family.",
            "Freeze chopped basil in olive oil in an ice cube tray.",
        ],
    ),
    (
        "symptoms of dehydration",
        [
            "Thirst, dark urine, fatigue and dizziness are common signs of dehydration.",
            "Drink water regularly during exercise.",
            "The human body is about 60% water.",
        ],
    ),
    (
        "how to convert celsius to fahrenheit",
        [
            "Multiply the Celsius temperature by 9/5 and add 32.",
            "Water boils at 100 degrees Celsius at sea level.",
            "The Kelvin scale starts at absolute zero.",
        ],
    ),
]

# finished while the queues page samples its throughput
LATE_JOB = (
    "Who wrote Pride and Prejudice?",
    [
        "Pride and Prejudice is an 1813 novel by Jane Austen.",
        "Charlotte Bronte wrote Jane Eyre, published in 1847.",
        "The novel follows Elizabeth Bennet and Mr Darcy.",
    ],
    {"name": "icr"},
)

PLAYGROUND = (
    "Which planet is known as the Red Planet?",
    [
        "Mars is called the Red Planet because iron oxide on its surface gives it a reddish look.",
        "Jupiter is the largest planet in the Solar System.",
        "Venus is the hottest planet, with a thick atmosphere of carbon dioxide.",
        "NASA's Perseverance rover landed in Mars's Jezero crater in 2021.",
        "Red giants are stars near the end of their lives.",
    ],
)


def _say(message: str) -> None:
    print(message, flush=True)


def _wait_job(http: httpx.Client, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
        time.sleep(0.5)


def _submit(http: httpx.Client, model: str, query: str, passages: list[str], strategy: dict[str, Any] | None) -> str:
    body: dict[str, Any] = {
        "query": {"text": query},
        "candidates": [{"docid": f"doc-{i + 1}", "text": t} for i, t in enumerate(passages)],
        "model": model,
    }
    if strategy:
        body["strategy"] = strategy
    return str(http.post("/v1/jobs", json=body).raise_for_status().json()["id"])


def submit_content(http: httpx.Client, model: str) -> tuple[list[str], str]:
    """The jobs (waited for) and the batch (waited for) the pictures show; their ids."""
    ids = [_submit(http, model, *job) for job in JOBS]
    for job_id in ids:
        job = _wait_job(http, job_id)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
    lines = [
        {
            "custom_id": f"faq-{i + 1}",
            "body": {"query": {"text": q}, "candidates": [{"docid": f"p{j + 1}", "text": t} for j, t in enumerate(ps)]},
        }
        for i, (q, ps) in enumerate(BATCH)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    batch_id = str(http.post(f"/v1/batches?model={model}", content=data).raise_for_status().json()["id"])
    deadline = time.monotonic() + 600
    while http.get(f"/v1/batches/{batch_id}").raise_for_status().json()["status"] != "completed":
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} did not complete")
        time.sleep(0.5)
    return ids, batch_id


def take(http: httpx.Client, key: str, model: str, job_ids: list[str], batch_id: str, out: Path) -> None:
    """Click through the console and save the four pictures; fails on a JS error or a test path."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

        page.goto(f"{str(http.base_url).rstrip('/')}/ui")
        page.wait_for_selector("#key-page:not([hidden])")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector(f"#jobs-table tr[data-job='{job_ids[0]}']")

        # playground first, so its job is in the jobs list too
        page.click("nav a[data-page=playground]")
        page.wait_for_selector(f"#play-model option[value='{model}']", state="attached")
        page.select_option("#play-model", model)
        page.select_option("#play-strategy", "icr")  # the strategy `make demo` runs with this model
        page.wait_for_selector("#play-settings legend:has-text('ICR')")
        page.fill("#play-query", PLAYGROUND[0])
        page.fill("#play-passages", "\n".join(PLAYGROUND[1]))
        page.click("#play-run")
        page.wait_for_selector("#play-result .ranking li")
        _check(page.inner_text("body"))
        page.screenshot(path=str(out / "playground.png"), full_page=True)

        page.click("nav a[data-page=jobs]")
        page.wait_for_selector(f"#jobs-table tr[data-job='{job_ids[0]}']")
        page.click(f"#jobs-table tr[data-job='{job_ids[0]}']")
        page.wait_for_selector("#job-detail .history li")
        page.wait_for_timeout(500)
        _check(page.inner_text("body"))
        page.screenshot(path=str(out / "jobs.png"), full_page=True)

        page.click("nav a[data-page=queues]")
        page.wait_for_selector("#workers-table tbody tr")
        page.wait_for_function("document.querySelector('#throughput-now').textContent.includes('jobs/min')")
        _wait_job(http, _submit(http, model, *LATE_JOB))  # something finishes while the page samples
        page.wait_for_timeout(4500)  # two more throughput samples
        _check(page.inner_text("body"))
        page.screenshot(path=str(out / "queues.png"), full_page=True)

        page.click("nav a[data-page=batches]")
        page.wait_for_selector(f"#batches-table tr[data-batch='{batch_id}'] button.download")
        _check(page.inner_text("body"))
        page.screenshot(path=str(out / "batches.png"), full_page=True)
        context.close()
        browser.close()
    if errors:
        raise RuntimeError(f"the console logged errors: {errors}")


def _check(text: str) -> None:
    for bad in ("/tmp/", "pytest", "tests.", "tiny"):
        if bad in text:
            raise RuntimeError(f"the page shows {bad!r}: not a clean stack")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui", help="folder of the PNGs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model of `rerankd up` (pulled: `make models`)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    token, key = secrets.token_hex(8), "rk-" + secrets.token_urlsafe(16)
    env = demo_env(token, args.model)
    env["RERANKD_API_KEYS"] = f"docs:{key}"
    code = 0
    with interruptible(), tempfile.TemporaryDirectory(prefix="rerankd-shots-") as tmp:
        stack = DemoStack(env, Path(tmp) / "data", Path(tmp) / "stack.log", worker_concurrency=1)
        try:
            stack.start()
            _say(f"== rerankd up on {stack.url} ({args.model}); log {stack.log_path}")
            problem = stack.wait_ready(600)
            if problem is not None:
                raise RuntimeError(f"{problem}; the end of the log:\n{stack.log_tail()}")
            with httpx.Client(base_url=stack.url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
                _say(f"== {len(JOBS)} jobs and a batch of {len(BATCH)} through the API")
                job_ids, batch_id = submit_content(http, args.model)
                _say(f"== the console in chromium -> {args.out}")
                take(http, key, args.model, job_ids, batch_id, args.out)
        except (RuntimeError, httpx.HTTPError) as e:
            _say(f"error: {e}\n{stack.log_tail()}")
            code = 1
        except KeyboardInterrupt:
            code = 130
        finally:
            shield()
            _say("== stopping the stack: " + stack.stop(token, 60))
    for name in ("jobs", "queues", "playground", "batches"):
        if code == 0:
            _say(f"   {args.out / (name + '.png')}")
    return code


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
