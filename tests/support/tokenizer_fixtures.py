"""Real tokenizers of bundled models, committed as compact fixtures (no model download).

``tests/unit/data/tokenizers/NAME/`` holds ``tokenizer.json.gz`` (the model folder's
``tokenizer.json``, minified and gzipped), ``tokenizer_config.json`` and ``chat_template.jinja``,
extracted from the converted bundled model.  Regenerate from the model cache with

    python -m tests.support.tokenizer_fixtures qwen2.5-coder-0.5b-instruct

and ``tests/integration/test_tokenizer_fixtures.py`` checks each fixture against its model
whenever that model is cached.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rerankd.engines.hf_tokenizer import HFTokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "data" / "tokenizers"
PLAIN_FILES = ("tokenizer_config.json", "chat_template.jinja")


def minified(tokenizer_json: Path) -> bytes:
    """``tokenizer.json`` re-serialised without whitespace (same content)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_fixture(model_dir: Path, name: str) -> Path:
    """Extract the tokenizer files of ``model_dir`` into the fixture folder ``name``."""
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json.gz").write_bytes(gzip.compress(minified(model_dir / "tokenizer.json"), 9, mtime=0))
    for f in PLAIN_FILES:
        shutil.copyfile(model_dir / f, out / f)
    return out


def fixture_dir(name: str, into: Path) -> Path:
    """The fixture ``name`` unpacked into ``into`` as a tokenizer folder transformers loads."""
    src = FIXTURES / name
    into.mkdir(parents=True, exist_ok=True)
    (into / "tokenizer.json").write_bytes(gzip.decompress((src / "tokenizer.json.gz").read_bytes()))
    for f in PLAIN_FILES:
        shutil.copyfile(src / f, into / f)
    return into


def load_fixture_tokenizer(name: str) -> HFTokenizer:
    """The fixture ``name`` as rerankd's tokenizer adapter."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return HFTokenizer(AutoTokenizer.from_pretrained(str(fixture_dir(name, Path(tmp) / name))))


if __name__ == "__main__":
    from rerankd.models.provision import model_dir

    for arg in sys.argv[1:]:
        print(write_fixture(model_dir(arg), arg))
