"""TREC run files and result JSONL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from rerankd.types import RerankResult


def trec_lines(result: RerankResult, tag: str | None = None) -> Iterable[str]:
    """``qid Q0 docid rank score tag`` lines of one result."""
    tag = tag or f"rerankd-{result.strategy}"
    for d in result.ranking:
        yield f"{result.qid} Q0 {d.docid} {d.rank} {d.score:.6f} {tag}\n"


def write_result(fh: IO[str], result: RerankResult, fmt: str) -> None:
    if fmt == "trec":
        fh.writelines(trec_lines(result))
    elif fmt == "jsonl":
        fh.write(result.model_dump_json() + "\n")
    else:
        raise ValueError(f"unknown output format {fmt!r}; use trec or jsonl")
