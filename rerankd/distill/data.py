"""Teaching data: the teacher's rankings and scores (run journals) joined with the query file's texts.

A teach run's journal (``rerankd rerank`` / ``rerankd distill teach``) records, per query, the
teacher's ranking and scores; its header names the query file.  :func:`load_teaching` joins them
into :class:`TeachQuery` lists, strictly: a bad line anywhere (the torn last line of a run still
in progress included) is a :class:`TeachingDataError` naming the file and line.  Queries are split
into training and held-out sets *by query*, reproducibly from a seed (:func:`split_queries`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.formats.inputs import InputFormatError, QueryItem, read_queries
from rerankd.runs.journal import JournalError, read_journal

__all__ = [
    "TeachDoc",
    "TeachQuery",
    "TeachingDataError",
    "data_sha256",
    "load_teaching",
    "split_queries",
    "teacher_labels",
]


class TeachingDataError(ValueError):
    """Teaching data that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class TeachDoc:
    docid: str
    text: str
    score: float
    """The teacher's score (its own scale)."""
    rank: int
    """The teacher's rank (1 = best)."""


@dataclass
class TeachQuery:
    qid: str
    query: str
    docs: list[TeachDoc] = field(default_factory=list)
    """In the teacher's order, best first."""
    teacher: dict[str, Any] = field(default_factory=dict)
    """The run settings of the teacher (model, strategy, ...)."""


def _strict_journal(path: Path) -> tuple[dict[str, Any], list[Any]]:
    try:
        contents = read_journal(path)
    except JournalError as e:
        raise TeachingDataError(str(e)) from None
    except OSError as e:
        raise TeachingDataError(f"{path}: cannot read the teacher's journal ({e.strerror})") from None
    if contents.torn:
        line = path.read_bytes()[: contents.good_bytes].count(b"\n") + 1
        raise TeachingDataError(
            f"{path}:{line}: torn or corrupt last journal line (a teach run still running or killed?): "
            "run the teach stage again to finish it"
        )
    return contents.header, [contents.results[i] for i in sorted(contents.results)]


def _query_texts(header: dict[str, Any], journal: Path, inputs: Path | None) -> dict[str, QueryItem]:
    source = inputs or Path(str((header.get("inputs") or {}).get("input") or ""))
    if not str(source) or not source.is_file():
        raise TeachingDataError(f"{journal}: its query file {str(source)!r} is not found; pass it with --queries")
    try:
        items = list(read_queries(source))
    except InputFormatError as e:
        raise TeachingDataError(str(e)) from None
    return {it.query.qid or str(i): it for i, it in enumerate(items)}


def load_teaching(journals: Sequence[Path], queries: Sequence[Path | None] | None = None) -> list[TeachQuery]:
    """The teacher's rankings of every journal, with passage texts from each journal's query file
    (``queries[i]`` overrides the file named in journal ``i``'s header)."""
    out: list[TeachQuery] = []
    seen: set[str] = set()
    for j, path in enumerate(journals):
        header, results = _strict_journal(path)
        override = queries[j] if queries is not None and j < len(queries) else None
        items = _query_texts(header, path, override)
        settings = dict(header.get("settings") or {})
        teacher = {"model": settings.get("model"), "strategy": settings.get("strategy"), "journal": str(path)}
        for res in results:
            qid = res.qid or ""
            item = items.get(qid)
            if item is None:
                raise TeachingDataError(f"{path}: query {qid!r} is not in its query file")
            if qid in seen:
                raise TeachingDataError(f"{path}: query {qid!r} appears in more than one teaching journal")
            seen.add(qid)
            texts = {c.docid: (f"{c.title}: {c.text}" if c.title else c.text) for c in item.candidates}
            docs = [TeachDoc(d.docid, texts[d.docid], d.score, d.rank) for d in res.ranking if d.docid in texts]
            out.append(TeachQuery(qid, item.query.text, docs, teacher))
    if not out:
        raise TeachingDataError(f"no teaching queries in {', '.join(map(str, journals))}")
    return out


def data_sha256(queries: Iterable[TeachQuery]) -> str:
    """A hash of the teaching data: every query's id, text and the teacher's order and scores."""
    h = hashlib.sha256()
    for q in sorted(queries, key=lambda q: q.qid):
        row = [q.qid, q.query, [(d.docid, round(d.score, 6), d.text) for d in q.docs]]
        h.update(json.dumps(row, ensure_ascii=False).encode())
    return h.hexdigest()


def split_queries(
    queries: Sequence[TeachQuery], heldout: float, seed: int
) -> tuple[list[TeachQuery], list[TeachQuery]]:
    """``(train, held_out)`` by query: a seeded shuffle of the sorted query ids, the last
    ``heldout`` fraction (at least one query when ``heldout > 0``) held out."""
    if not 0 <= heldout < 1:
        raise ValueError(f"heldout must be in [0, 1), got {heldout}")
    ids = sorted(q.qid for q in queries)
    random.Random(seed).shuffle(ids)
    n_out = 0 if heldout == 0 else max(1, round(len(ids) * heldout))
    if n_out >= len(ids):
        raise ValueError(f"heldout {heldout} leaves no training query of {len(ids)}")
    out_ids = set(ids[len(ids) - n_out :])
    return [q for q in queries if q.qid not in out_ids], [q for q in queries if q.qid in out_ids]


def teacher_labels(q: TeachQuery, kind: str) -> list[float]:
    """Per-document training labels from the teacher, in ``q.docs`` order.

    ``rank``: a graded label from the teacher's rank, ``4 * (n - rank) / (n - 1)`` (4 for the
    first, 0 for the last; what rank-based losses need); ``score``: the teacher's scores,
    standardised per query (what score-matching losses such as MarginMSE need)."""
    n = len(q.docs)
    if kind == "rank":
        return [4.0 * (n - d.rank) / max(1, n - 1) for d in q.docs]
    if kind == "score":
        scores = [d.score for d in q.docs]
        mean = sum(scores) / n
        sd = (sum((s - mean) ** 2 for s in scores) / n) ** 0.5 or 1.0
        return [(s - mean) / sd for s in scores]
    raise ValueError(f"labels must be rank or score, got {kind!r}")
