"""Resumable rerank runs of query files (``rerankd rerank``): the journal, the run, executors.

("batch" in rerankd means only a batch of the service API, ``POST /v1/batches``.)"""

from rerankd.runs.executors import Executor, engine_executor, fan_out
from rerankd.runs.journal import (
    JOURNAL_SUFFIX,
    JournalError,
    JournalMismatchError,
    file_sha256,
    journal_path,
    read_journal,
    read_results,
)
from rerankd.runs.run import ResumableRun, RunSummary, run_resumable

__all__ = [
    "JOURNAL_SUFFIX",
    "Executor",
    "JournalError",
    "JournalMismatchError",
    "ResumableRun",
    "RunSummary",
    "engine_executor",
    "fan_out",
    "file_sha256",
    "journal_path",
    "read_journal",
    "read_results",
    "run_resumable",
]
