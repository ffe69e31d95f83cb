"""Resumable rerank runs of a query file: a crash-safe journal beside the output.

A run reranks a list of requests and writes one output file (TREC run or result
JSONL) in input order.  While it runs, every finished query is appended to a sidecar
journal (``OUTPUT.journal.jsonl``), flushed and fsync'd, so a run killed at any point
and started again with the same output path skips the finished queries and runs only
the rest: nothing is lost, nothing is done (or written) twice.

The header's fingerprint hashes the settings that decide the results (input file contents,
strategy config, model, engine, top_k, limit); a rerun whose settings differ refuses to
resume, naming what differs, unless it is told to restart.  A torn last line (the process
died mid-write) is cut off on resume.  Every result line is a valid ``RerankResult`` (the
extra ``index`` key is ignored by the model), so the journal doubles as the run's result
JSONL, which :mod:`rerankd.formats.export` reads.

Executors (in-process, or jobs of the service) are in :mod:`rerankd.runs.executors`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from rerankd.formats.trec import write_result
from rerankd.runs.executors import Executor
from rerankd.runs.journal import (
    JOURNAL_VERSION,
    JournalError,
    JournalMismatchError,
    _fsync_dir,
    _lock,
    fingerprint,
    journal_path,
    read_journal,
)
from rerankd.types import RerankRequest, RerankResult

__all__ = ["ResumableRun", "RunSummary", "run_resumable"]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
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


class ResumableRun:
    """One resumable run: ``open()`` loads the journal, ``run(execute)`` does the
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
            raise RuntimeError("ResumableRun.open() first")
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
            todo = [self.requests[i] for i in pending]
            stream = execute(todo)
            try:
                async for pos, result in stream:
                    if not 0 <= pos < len(todo):
                        raise IndexError(f"executor yielded position {pos} for {len(todo)} requests")
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

    def finish(self) -> RunSummary:
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
        return RunSummary(
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


async def run_resumable(
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
) -> RunSummary:
    """Open (or resume) the journal beside ``output``, run what is pending with
    ``execute``, then write ``output`` in input order."""
    run = ResumableRun(
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
