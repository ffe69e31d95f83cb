"""``pip install rerankd`` (no extra) in a fresh virtualenv: the client, formats and eval work
against the real stack, no torch or service package comes with it, and the parts that need an
extra say which ``pip install`` line brings them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import KEYS, REPO, Service

pytestmark = pytest.mark.integration

HEAVY = ("torch", "transformers", "celery", "fastapi", "redis", "uvicorn", "openai", "vllm", "sentence_transformers")


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("base-install")
    src = root / "src"  # a copy: building in the checkout would leave build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "rerankd", src / "rerankd", ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(src)])
    assert pip.returncode == 0, pip.stderr[-3000:]
    yield venv


def test_base_install_has_no_heavy_packages(base_venv: Path) -> None:
    code = f"import importlib.util, json; print(json.dumps([m for m in {HEAVY!r} if importlib.util.find_spec(m)]))"
    out = _run([str(base_venv / "bin/python"), "-c", code])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    size = _run(["du", "-sm", str(base_venv)]).stdout.split()[0]
    print(f"base install: {size} MB in the venv")  # quoted in the docs; pytest -s shows it


def test_client_of_a_base_install_reranks_through_the_stack(base_venv: Path, service: Service) -> None:
    code = f"""
import json
from rerankd.client import Client
from rerankd.types import RerankRequest
with Client({service.url!r}, api_key={KEYS["alice"]!r}) as c:
    hits = c.rerank("capital of France", ["Paris is in France.", "Cats purr.", "Berlin"], model="tiny")
    job = c.wait(c.submit_job(RerankRequest.model_validate(
        {{"query": {{"text": "q"}}, "candidates": [{{"docid": "a", "text": "x"}}, {{"docid": "b", "text": "y"}}]}}
    ), model="tiny")["id"])
print(json.dumps({{"indices": sorted(r["index"] for r in hits["results"]), "status": job["status"],
                  "docids": sorted(d["docid"] for d in job["result"]["ranking"])}}))
"""
    out = _run([str(base_venv / "bin/python"), "-c", code])
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "indices": [0, 1, 2],
        "status": "succeeded",
        "docids": ["a", "b"],
    }


def test_base_install_cli_evaluates_and_names_missing_extras(base_venv: Path, tmp_path: Path) -> None:
    rerankd = str(base_venv / "bin/rerankd")
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 x\n1 Q0 b 2 1.0 x\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 a 1\n1 0 b 0\n")
    ev = _run([rerankd, "eval", str(run), "--qrels", str(qrels)])
    assert ev.returncode == 0 and "nDCG@10" in ev.stdout, ev.stdout + ev.stderr
    up = _run([rerankd, "up", "--port", "1"])
    assert up.returncode == 2 and "pip install 'rerankd[service]'" in up.stderr, up.stderr[-2000:]
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"qid": "1", "query": "q", "candidates": [{"docid": "a", "text": "x"}]}) + "\n")
    rr = _run([rerankd, "rerank", str(queries), "-o", str(tmp_path / "out.trec"), "--engine", "hf"])
    assert rr.returncode == 2 and "pip install 'rerankd[hf]'" in rr.stderr, rr.stderr[-2000:]
