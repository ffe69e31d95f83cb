"""bench/gpu_smoke.py end to end on CPU (``--tiny``): the same code path the GPU machine runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODELS = ("qwen2-7b", "mistral-7b")
STRATEGIES = ("sliding_window", "full_ranking", "first", "icr")
ONE_RUN = ("--models", "qwen2-7b", "--strategies", "first")


def test_tiny_smoke_runs_every_strategy_on_both_architectures() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "bench/gpu_smoke.py", "--tiny", "--device", "cpu", "--queries", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    report = out[out.index("== gpu_smoke report ==") :]
    for model in MODELS:
        for strategy in STRATEGIES:
            row = re.search(rf"^{model}\s+{strategy}\s+1\s+([\d.]+).*ok 1/1", report, re.M)
            assert row, f"no passing row for {model} {strategy} in:\n{report}"
        # ICR's shape and the expectation are printed for each model (no measurement on CPU).
        icr = re.search(rf"^ICR memory {model}: context N=(\d+) tokens, query span S=(\d+) tokens", report, re.M)
        assert icr and int(icr.group(1)) > int(icr.group(2)) > 0, report
    assert report.count("measured: n/a on this device") == len(MODELS)
    assert "RESULT OK" in report


def test_budget_guard_skips_work_and_reports_partial() -> None:
    """A budget too small for the work stops cleanly: skipped runs are reported, exit status 3."""
    proc = subprocess.run(
        [sys.executable, "bench/gpu_smoke.py", "--tiny", "--device", "cpu", "--budget-s", "0.5", *ONE_RUN],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        timeout=600,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "RESULT PARTIAL" in proc.stdout
    assert re.search(r"^qwen2-7b\s+first\s+skipped 1", proc.stdout, re.M), proc.stdout
