"""Student names: ``rerankd distill train --name N`` registers a student folder under a name
that then works wherever a model name does (:func:`rerankd.models.provision.resolve_model`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rerankd.models.cache import cache_root

__all__ = ["StaleStudentError", "register_name", "registered", "resolve_name", "students_dir"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StaleStudentError(ValueError):
    """A registered student name whose folder is gone."""


def students_dir() -> Path:
    """Where registered student names live (``students/`` in the rerankd cache)."""
    return cache_root() / "students"


def register_name(name: str, folder: Path) -> Path:
    """Register ``name`` for ``folder`` (the caller checks it is a student); returns the name's file."""
    if not NAME.match(name):
        raise ValueError(f"student name {name!r}: letters, digits, '.', '_' and '-' only (at most 100)")
    d = students_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    path.write_text(str(folder.resolve()) + "\n", encoding="utf-8")
    return path


def registered() -> dict[str, Path]:
    """Registered student names and their folders."""
    d = students_dir()
    if not d.is_dir():
        return {}
    return {p.name: Path(p.read_text(encoding="utf-8").strip()) for p in sorted(d.iterdir()) if p.is_file()}


def resolve_name(name_or_path: str | os.PathLike[str]) -> Path | None:
    """The folder of a registered student name, else ``None`` (existing folders are not names)."""
    raw = os.fspath(name_or_path)
    if not NAME.match(raw):
        return None
    path = students_dir() / raw
    if not path.is_file():
        return None
    folder = Path(path.read_text(encoding="utf-8").strip())
    if not folder.is_dir():
        raise StaleStudentError(f"student {raw!r} is registered for {folder}, which no longer exists")
    return folder
