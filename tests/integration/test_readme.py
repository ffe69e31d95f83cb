"""The README's copy-paste recipes, run exactly as written so the README cannot rot.

Every fenced block after a ``<!-- recipe: NAME -->`` line is run with ``bash -e`` in a scratch
folder that holds the repository's ``examples/`` (as a user's checkout does), with the
virtualenv's ``bin`` first on PATH (as after ``source .venv/bin/activate``), a private HOME
and no ``RERANKD_*`` settings (the model cache is the real one).  The only change ever made
to a block: when port 8080 is taken on the test machine, the RAG recipe gets a free port.
Every process a recipe starts must be gone shortly after it ends.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rerankd.launchers.net import free_port
from rerankd.models.provision import cache_root
from rerankd.proctree import MARKER, stop_pids, tagged

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECIPE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\s*```(?:bash|sh)\n(?P<code>.*?)```", re.S)
EXPECTED = ["rag", "batch", "distillation"]  # run in this order: distillation reads batch's journal


def recipes() -> dict[str, str]:
    return {m["name"]: m["code"] for m in RECIPE.finditer((REPO / "README.md").read_text(encoding="utf-8"))}


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    (root / "examples").symlink_to(REPO / "examples")
    (root / "home").mkdir()
    return root


def test_the_readme_has_the_three_recipes_on_its_first_screen() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert list(recipes()) == EXPECTED
    first = text.index("<!-- recipe: rag -->")
    assert text.index("make demo") < text.index("make test") < first < text.index("\n## ", first)


@pytest.mark.parametrize("name", EXPECTED)
def test_recipe_runs_as_written(name: str, workdir: Path) -> None:
    code = recipes()[name]
    if name == "rag" and _port_taken(8080):
        code = code.replace("8080", str(free_port()))
    token = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKD_", "XDG_"))}
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "HOME": str(workdir / "home"),
            "RERANKD_CACHE_DIR": str(cache_root()),
            "HF_HUB_OFFLINE": "1",
            MARKER: token,
        }
    )
    try:
        out = subprocess.run(
            ["bash", "-e", "-c", code],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        deadline = time.monotonic() + 60
        while tagged(token) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = tagged(token)
    finally:
        stop_pids(tagged(token), timeout=5)
    assert out.returncode == 0, f"recipe {name} failed:\n{out.stdout}\n{out.stderr}"
    assert left == [], f"recipe {name} left processes behind: {left}"
    if name == "rag":
        hits = re.findall(r"^([0-9]+) ([0-9.]+)$", out.stdout, re.M)  # the stack's log lines are there too
        assert sorted(int(i) for i, _ in hits) == [0, 1, 2], out.stdout
        assert all(0.0 <= float(score) <= 1.0 for _, score in hits)
    elif name == "batch":
        assert "nDCG@10" in out.stdout
        assert (workdir / "runs" / "batch.trec.journal.jsonl").exists()
    else:
        assert "num_rows: 2" in out.stdout, out.stdout
