"""The crash-safe journal of a resumable rerank run (``OUTPUT.journal.jsonl``).

Journal layout (JSON lines)::

    {"rerankd_journal": 1, "fingerprint": "<sha256>", "settings": {...}, "inputs": {...}, "total": N}
    {"index": 0, "qid": "...", "ranking": [...], "strategy": ..., ...}   # a RerankResult + its index
    ...

A torn last line (the process died mid-write) is reported, and cut off on resume.  Every
result line is a valid ``RerankResult`` (the extra ``index`` key is ignored by the model), so
the journal doubles as the run's result JSONL, which :mod:`rerankd.formats.export` reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from rerankd.types import RerankResult

__all__ = [
    "JOURNAL_SUFFIX",
    "JOURNAL_VERSION",
    "JournalContents",
    "JournalError",
    "JournalMismatchError",
    "file_sha256",
    "fingerprint",
    "journal_path",
    "read_journal",
    "read_results",
]

JOURNAL_SUFFIX = ".journal.jsonl"
JOURNAL_VERSION = 1


class JournalError(RuntimeError):
    """A journal that cannot be used as it is (corrupt, or not a journal)."""


class JournalMismatchError(JournalError):
    """The journal was written by a run with different settings."""


def journal_path(output: Path) -> Path:
    """The journal beside ``output``: ``run.trec`` -> ``run.trec.journal.jsonl``."""
    return output.with_name(output.name + JOURNAL_SUFFIX)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A stable hash of JSON-serialisable run settings."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _lock(fh: IO[bytes], path: Path) -> None:
    """Hold an exclusive advisory lock on the journal while the run has it open."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise JournalError(f"{path} is in use by another running rerank run; wait for it or stop it") from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class JournalContents:
    header: dict[str, Any]
    results: dict[int, RerankResult]
    good_bytes: int  # length of the valid prefix (header + complete result lines)
    torn: bool  # the file ended in an incomplete or unparsable last line


def read_journal(path: Path) -> JournalContents:
    """Parse a journal; a torn last line is reported (``torn``), not an error.

    Raises :class:`JournalError` for a missing header or a bad line before the last one.
    Duplicate indices keep the first result.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    header: dict[str, Any] | None = None
    results: dict[int, RerankResult] = {}
    offset = 0
    good = 0
    torn = False
    for n, raw in enumerate(lines):
        is_last = n == len(lines) - 1
        if is_last and raw == b"":
            break  # file ends with a newline
        complete = not is_last  # a line without its newline was cut mid-write
        end = offset + len(raw) + (1 if complete else 0)
        try:
            obj = json.loads(raw) if complete else None
            if obj is None:
                raise ValueError("incomplete line")
            if header is None:
                if not isinstance(obj, dict) or "rerankd_journal" not in obj:
                    raise JournalError(f"{path}: not a rerankd journal (first line has no header)")
                header = obj
            else:
                idx = obj["index"]
                if not isinstance(idx, int) or idx < 0:
                    raise ValueError(f"bad index {idx!r}")
                res = RerankResult.model_validate(obj)
                results.setdefault(idx, res)
        except JournalError:
            raise
        except (ValueError, KeyError, TypeError, ValidationError) as e:
            rest = b"".join(lines[n + 1 :]).strip()
            if rest:
                raise JournalError(f"{path}:{n + 1}: corrupt journal line ({e}) with lines after it") from e
            torn = True
            break
        offset = end
        good = end
    if header is None:
        raise JournalError(f"{path}: empty or torn journal header")
    return JournalContents(header, results, good, torn)


def read_results(path: Path) -> Iterator[RerankResult]:
    """Results of a result JSONL file or a journal, in file order (journal: by index)."""
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if isinstance(head, dict) and "rerankd_journal" in head:
        contents = read_journal(path)
        for i in sorted(contents.results):
            yield contents.results[i]
        return
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield RerankResult.model_validate_json(line)
            except ValidationError as e:
                raise ValueError(f"{path}:{lineno}: not a RerankResult line: {e.errors()[0]['msg']}") from e
