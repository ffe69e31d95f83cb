"""Resumable batch reranking: a crash-safe journal beside the output.

A batch run reranks a list of requests and writes one output file (TREC run or result
JSONL) in input order.  While it runs, every finished query is appended to a sidecar
journal (``OUTPUT.journal.jsonl``), flushed and fsync'd, so a run killed at any point
and started again with the same output path skips the finished queries and runs only
the rest: nothing is lost, nothing is done (or written) twice.

Journal layout (JSON lines)::

    {"rerankd_journal": 1, "fingerprint": "<sha256>", "settings": {...}, "inputs": {...}, "total": N}
    {"index": 0, "qid": "...", "ranking": [...], "strategy": ..., ...}   # a RerankResult + its index
    ...

The header's fingerprint hashes the settings that decide the results (input file contents,
strategy config, model, engine, top_k, limit); a rerun whose settings differ refuses to
resume, naming what differs, unless it is told to restart.  A torn last line (the process
died mid-write) is cut off on resume.  Every result line is a valid ``RerankResult`` (the
extra ``index`` key is ignored by the model), so the journal doubles as the run's result
JSONL, which :mod:`rerankd.formats.export` reads.

How queries get executed is pluggable: an :data:`Executor` takes the pending requests and
yields ``(position, result)`` pairs as they finish, in any order.  :func:`engine_executor`
runs them in-process against one engine; :class:`rerankd.queue_executor.QueueExecutor`
submits them as jobs to the service API (``rerankd rerank --queue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError
from tqdm import tqdm

from rerankd.engines.base import Engine
from rerankd.formats.trec import write_result
from rerankd.types import RerankRequest, RerankResult

__all__ = [
    "JOURNAL_SUFFIX",
    "BatchRun",
    "BatchSummary",
    "Executor",
    "JournalError",
    "JournalMismatchError",
    "engine_executor",
    "fan_out",
    "file_sha256",
    "journal_path",
    "read_journal",
    "read_results",
    "run_batch",
]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal.jsonl"
JOURNAL_VERSION = 1

Executor = Callable[[Sequence[RerankRequest]], AsyncIterator[tuple[int, RerankResult]]]
"""Runs the given requests; yields ``(position in the given sequence, result)`` as each finishes."""


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
        raise JournalError(f"{path} is in use by another running batch; wait for it or stop it") from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- executors


async def fan_out(
    count: int, concurrency: int, run_one: Callable[[int], Awaitable[RerankResult]]
) -> AsyncIterator[tuple[int, RerankResult]]:
    """Run ``run_one(i)`` for ``i`` in ``range(count)``, ``concurrency`` at a time; yield
    ``(i, result)`` as each finishes.  The first error stops the others and is raised."""
    todo = iter(range(count))
    done: asyncio.Queue[tuple[int, RerankResult] | BaseException | None] = asyncio.Queue()

    async def slot() -> None:
        try:
            for i in todo:  # the shared iterator hands each index to one slot
                done.put_nowait((i, await run_one(i)))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # surfaced to the consumer, which stops the run
            done.put_nowait(e)
        finally:
            done.put_nowait(None)

    slots = [asyncio.create_task(slot()) for _ in range(min(concurrency, count))]
    running = len(slots)
    try:
        while running:
            item = await done.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for s in slots:
            s.cancel()
        await asyncio.gather(*slots, return_exceptions=True)


def engine_executor(engine: Engine, concurrency: int = 1) -> Executor:
    """An in-process executor: ``concurrency`` queries at a time against ``engine``."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")

    def execute(requests: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        from rerankd.strategies import rerank

        return fan_out(len(requests), concurrency, lambda i: rerank(requests[i], engine))

    return execute


# --------------------------------------------------------------------------- the run


@dataclass
class BatchSummary:
    total: int
    resumed: int
    ran: int
    output: Path
    journal: Path
    journal_kept: bool
    elapsed_s: float


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{key} (journal: {json.dumps(a, default=str)}, now: {json.dumps(b, default=str)})")
    return out


def _check_result(req: RerankRequest, res: RerankResult, where: str) -> None:
    want = {c.docid for c in req.candidates}
    got = [d.docid for d in res.ranking]
    if len(got) != len(want) or set(got) != want:
        raise JournalError(f"{where}: result for qid {res.qid!r} is not a permutation of its docids")
    if res.qid != req.query.qid:
        raise JournalError(f"{where}: result qid {res.qid!r} does not match request qid {req.query.qid!r}")


class BatchRun:
    """One resumable batch: ``open()`` loads the journal, ``run(execute)`` does the
    pending queries, ``finish()`` writes the output atomically.

    ``settings`` are the result-deciding settings (fingerprinted); ``inputs`` is free-form
    provenance kept in the header (e.g. the input file paths, read back by exports).
    """

    def __init__(
        self,
        requests: Sequence[RerankRequest],
        output: Path,
        fmt: str = "trec",
        *,
        settings: Mapping[str, Any],
        inputs: Mapping[str, Any] | None = None,
        restart: bool = False,
        keep_journal: bool = True,
        progress: bool = True,
        journal: Path | None = None,
    ) -> None:
        if fmt not in ("trec", "jsonl"):
            raise ValueError(f"unknown output format {fmt!r}; use trec or jsonl")
        self.requests = list(requests)
        self.output = Path(output)
        self.fmt = fmt
        self.settings = dict(settings)
        self.fingerprint = fingerprint(self.settings)
        self.inputs = dict(inputs or {})
        self.restart = restart
        self.keep_journal = keep_journal
        self.progress = progress
        self.journal = journal or journal_path(self.output)
        self.results: dict[int, RerankResult] = {}
        self.run_id = ""
        """Random id of this run, kept across resumes (``--restart`` draws a new one); executors
        that submit jobs derive idempotency keys from it."""
        self.resumed = 0
        self.ran = 0
        self._fh: IO[bytes] | None = None
        self._t0 = time.perf_counter()

    # -- journal ------------------------------------------------------------------

    @property
    def pending(self) -> list[int]:
        """Indices of the requests that have no result yet, in input order."""
        return [i for i in range(len(self.requests)) if i not in self.results]

    def open(self) -> list[int]:
        """Load (or create) the journal, locked for this run; return the pending indices."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        fh = self.journal.open("a+b")  # appends always go to the end, after any truncation
        try:
            _lock(fh, self.journal)
            fh.seek(0)
            head = fh.read(1 << 20)
            if self.restart and head:
                log.info("--restart: discarding journal %s", self.journal)
                fresh = True
            elif head and b"\n" not in head:
                log.warning("journal %s has no complete header; starting over", self.journal)
                fresh = True
            else:
                fresh = not head
            if fresh:
                self._write_header(fh)
            else:
                self._load(fh)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        return self.pending

    def _write_header(self, fh: IO[bytes]) -> None:
        self.run_id = secrets.token_hex(8)
        header = {
            "rerankd_journal": JOURNAL_VERSION,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "inputs": self.inputs,
            "total": len(self.requests),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        fh.truncate(0)
        fh.write(json.dumps(header, default=str).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
        _fsync_dir(self.journal.parent)

    def _load(self, fh: IO[bytes]) -> None:
        contents = read_journal(self.journal)
        head = contents.header
        if head.get("rerankd_journal") != JOURNAL_VERSION:
            raise JournalMismatchError(
                f"{self.journal} has journal version {head.get('rerankd_journal')!r}, this rerankd "
                f"writes {JOURNAL_VERSION}; use --restart to start over"
            )
        if head.get("fingerprint") != self.fingerprint:
            diffs = _diff(head.get("settings") or {}, self.settings) or ["fingerprint"]
            raise JournalMismatchError(
                f"{self.journal} belongs to a run with different settings, so it cannot be resumed: "
                f"differs in {'; '.join(diffs)}. Rerun with the journal's settings, pass --restart to "
                "discard it and start over, or choose another output path"
            )
        for i, res in contents.results.items():
            if i >= len(self.requests):
                raise JournalMismatchError(
                    f"{self.journal}: result index {i} is beyond the {len(self.requests)} queries"
                )
            _check_result(self.requests[i], res, str(self.journal))
        if contents.torn:
            log.warning("journal %s ends in a torn line (killed mid-write); cutting it off", self.journal)
        fh.truncate(contents.good_bytes)
        if contents.torn:
            fh.flush()
            os.fsync(fh.fileno())
        self.results = dict(contents.results)
        self.run_id = str(head.get("run_id") or self.fingerprint[:16])
        self.resumed = len(self.results)
        log.info("resuming from %s: %d of %d queries already done", self.journal, self.resumed, len(self.requests))

    def record(self, index: int, result: RerankResult) -> bool:
        """Journal one finished query durably; ``False`` (and nothing written) if already done."""
        if self._fh is None:
            raise RuntimeError("BatchRun.open() first")
        if not 0 <= index < len(self.requests):
            raise IndexError(f"result index {index} out of range for {len(self.requests)} requests")
        if index in self.results:
            log.warning("duplicate result for query %d (qid %s) ignored", index, result.qid)
            return False
        _check_result(self.requests[index], result, "executor")
        line = json.dumps({"index": index, **result.model_dump(mode="json")}, ensure_ascii=False)
        self._fh.write(line.encode() + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.results[index] = result
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- running ------------------------------------------------------------------

    async def run(self, execute: Executor, only: Sequence[int] | None = None) -> None:
        """Execute the pending requests (those in ``only``, if given), journaling each
        result as it arrives."""
        if self._fh is None:
            self.open()
        pending = self.pending
        total = len(self.requests)
        if only is not None:
            wanted = set(only)
            total = len(wanted)
            pending = [i for i in pending if i in wanted]
        if not pending:
            return
        bar = tqdm(
            total=total,
            initial=total - len(pending),
            unit="query",
            desc="rerank",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            batch = [self.requests[i] for i in pending]
            stream = execute(batch)
            try:
                async for pos, result in stream:
                    if not 0 <= pos < len(batch):
                        raise IndexError(f"executor yielded position {pos} for {len(batch)} requests")
                    if self.record(pending[pos], result):
                        self.ran += 1
                        bar.update(1)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:  # stop the executor's workers if we stopped early
                    await aclose()
        finally:
            bar.close()
        missing = [i for i in pending if i not in self.results]
        if missing:
            raise JournalError(
                f"executor finished without results for {len(missing)} queries "
                f"(first qid {self.requests[missing[0]].query.qid!r}); rerun to retry them"
            )

    def finish(self) -> BatchSummary:
        """Write the output in input order (tmp file + rename); keep or remove the journal."""
        missing = self.pending
        if missing:
            raise JournalError(f"cannot finish: {len(missing)} queries have no result yet")
        self.close()
        tmp = self.output.with_name(f".{self.output.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for i in range(len(self.requests)):
                write_result(fh, self.results[i], self.fmt)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.output)
        _fsync_dir(self.output.parent)
        if not self.keep_journal:
            self.journal.unlink(missing_ok=True)
        return BatchSummary(
            total=len(self.requests),
            resumed=self.resumed,
            ran=self.ran,
            output=self.output,
            journal=self.journal,
            journal_kept=self.keep_journal,
            elapsed_s=time.perf_counter() - self._t0,
        )

    def ordered_results(self) -> list[RerankResult]:
        """All results in input order (after :meth:`run`)."""
        return [self.results[i] for i in range(len(self.requests))]


async def run_batch(
    requests: Sequence[RerankRequest],
    execute: Executor,
    output: Path,
    fmt: str = "trec",
    *,
    settings: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    restart: bool = False,
    keep_journal: bool = True,
    progress: bool = True,
) -> BatchSummary:
    """Open (or resume) the journal beside ``output``, run what is pending with
    ``execute``, then write ``output`` in input order."""
    run = BatchRun(
        requests,
        output,
        fmt,
        settings=settings,
        inputs=inputs,
        restart=restart,
        keep_journal=keep_journal,
        progress=progress,
    )
    try:
        run.open()
        await run.run(execute)
        return run.finish()
    finally:
        run.close()
