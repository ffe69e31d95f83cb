"""Readers of query files: our JSONL, rank_llm request JSONL, TREC run + topics + collection.

Every reader yields ``RerankRequest``-ready ``(Query, [Candidate])`` pairs in file
order and raises :class:`InputFormatError` naming the file, the line and the problem.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from rerankd.types import Candidate, Query

InputFormat = Literal["auto", "jsonl", "rank_llm", "trec"]


class InputFormatError(ValueError):
    """A malformed input file; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class QueryItem:
    query: Query
    candidates: list[Candidate]


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _rank_llm_text(doc: dict[str, Any]) -> tuple[str | None, str]:
    title = doc.get("title")
    for key in ("contents", "text", "segment", "body", "passage"):
        if isinstance(doc.get(key), str):
            return title, doc[key]
    raise ValueError(f"candidate doc has no text field (looked for contents/text/segment/body), keys: {sorted(doc)}")


def _parse_line(obj: Any) -> QueryItem:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("query"), dict):  # rank_llm Request
        q = obj["query"]
        query = Query(qid=None if q.get("qid") is None else str(q["qid"]), text=q.get("text", ""))
        cands = []
        for i, c in enumerate(obj.get("candidates") or []):
            if not isinstance(c, dict) or "docid" not in c:
                raise ValueError(f"candidates[{i}] needs a docid")
            title, text = _rank_llm_text(c.get("doc") or {})
            cands.append(Candidate(docid=str(c["docid"]), text=text, title=title, score=c.get("score")))
    else:
        if "query" not in obj:
            raise ValueError("missing field 'query'")
        query = Query(qid=None if obj.get("qid") is None else str(obj["qid"]), text=obj["query"])
        raw = obj.get("candidates")
        if not isinstance(raw, list):
            raise ValueError("field 'candidates' must be a list")
        cands = []
        for i, c in enumerate(raw):
            if not isinstance(c, dict):
                raise ValueError(f"candidates[{i}] must be an object")
            c = dict(c)
            if "docid" in c:
                c["docid"] = str(c["docid"])
            cands.append(Candidate.model_validate(c))
    if not cands:
        raise ValueError("query has no candidates")
    return QueryItem(query, cands)


def read_jsonl(path: Path) -> Iterator[QueryItem]:
    """Our JSONL (``{qid, query, candidates:[{docid,text,title?,score?}]}``) or rank_llm
    request JSONL (``{query:{text,qid}, candidates:[{docid,score,doc:{contents|text|segment,title?}}]}``)."""
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
            try:
                item = _parse_line(obj)
            except ValidationError as e:
                first = e.errors()[0]
                loc = ".".join(str(x) for x in first["loc"])
                raise InputFormatError(path, lineno, f"{loc}: {first['msg']}") from e
            except ValueError as e:
                raise InputFormatError(path, lineno, str(e)) from e
            if item.query.qid is None:
                item = QueryItem(item.query.model_copy(update={"qid": str(lineno)}), item.candidates)
            yield item


def _read_tsv(path: Path, what: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise InputFormatError(path, lineno, f"expected '<id>\\t<{what}>' (tab-separated)")
            out[parts[0]] = parts[1:]
    return out


def read_trec(run: Path, topics: Path, collection: Path) -> Iterator[QueryItem]:
    """A TREC run (``qid Q0 docid rank score tag``) with topics (``qid\\tquery``) and a
    collection (``docid\\ttext`` or ``docid\\ttitle\\ttext``) as TSV files."""
    queries = _read_tsv(topics, "query")
    docs = _read_tsv(collection, "text")
    ranked: dict[str, list[tuple[int, str, float]]] = {}
    with _open(run) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 6:
                raise InputFormatError(
                    run, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}"
                )
            qid, _, docid, rank_s, score_s, _ = parts
            try:
                ranked.setdefault(qid, []).append((int(rank_s), docid, float(score_s)))
            except ValueError as e:
                raise InputFormatError(run, lineno, f"rank must be an integer and score a number: {e}") from e
    for qid, rows in ranked.items():
        if qid not in queries:
            raise InputFormatError(topics, None, f"no query text for qid {qid!r} of the run")
        cands = []
        for _, docid, bm25 in sorted(rows, key=lambda r: (r[0], -r[2])):
            if docid not in docs:
                raise InputFormatError(collection, None, f"no text for docid {docid!r} (qid {qid})")
            fields = docs[docid]
            title, text = (fields[0], fields[1]) if len(fields) >= 2 else (None, fields[0])
            cands.append(Candidate(docid=docid, text=text, title=title or None, score=bm25))
        yield QueryItem(Query(qid=qid, text=queries[qid][0]), cands)


def read_queries(path: Path, *, topics: Path | None = None, collection: Path | None = None) -> Iterator[QueryItem]:
    """Read any supported input: JSONL (ours or rank_llm), or a TREC run when
    ``topics`` and ``collection`` are given."""
    if not path.exists():
        raise InputFormatError(path, None, "file not found")
    if topics is not None or collection is not None:
        if topics is None or collection is None:
            raise InputFormatError(path, None, "a TREC run needs both --topics and --collection")
        return read_trec(path, topics, collection)
    return read_jsonl(path)
