"""Distillation exports: turn a reranked run (teacher rankings + scores) into training files.

A run's results (``RerankResult`` lines: a batch journal or ``--format jsonl`` output) carry
docids, ranks and teacher scores; the query and passage texts come from the run's input
file.  Formats (schemas in ``docs/exports.md``):

* ``listwise``: one line per query, ``{qid, query, docids, texts, scores, first_stage_ranks}``
  in teacher order, for listwise KL distillation against the full teacher distribution.
* ``margin-mse``: one line per (positive, negative) pair, ``{query, positive, negative, label}``
  with ``label = score(positive) - score(negative)``: sentence-transformers' ``MarginMSELoss``
  (inputs are the text columns in order, the label column must be named ``label``).
* ``kldiv``: one line per positive, ``{query, positive, negative_1..negative_n, label}`` with
  ``label = [score(positive), score(negative_1), ...]``: sentence-transformers'
  ``DistillKLDivLoss`` (and ``MarginMSELoss``, which accepts the same shape).
* ``flag``: one line per query, ``{query, pos, neg, pos_scores, neg_scores[, prompt]}``:
  FlagEmbedding's embedder fine-tuning data with knowledge distillation.

Positives are the teacher's top ``pos_top`` ranks; negatives are ranks ``neg_from`` ..
``neg_to`` (1-based, inclusive), of which the first ``neg_count`` (the hardest) are kept.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rerankd.formats.inputs import QueryItem, read_queries
from rerankd.types import Candidate, RerankResult

__all__ = [
    "EXPORT_FORMATS",
    "ExportError",
    "ExportOptions",
    "ExportStats",
    "export_rows",
    "load_texts",
    "passage_text",
    "write_export",
]

log = logging.getLogger(__name__)

ExportFormat = Literal["listwise", "margin-mse", "kldiv", "flag"]
EXPORT_FORMATS: tuple[str, ...] = ("listwise", "margin-mse", "kldiv", "flag")


class ExportError(ValueError):
    """The run and its input do not fit together, or the options make no sense."""


@dataclass(frozen=True)
class ExportOptions:
    """How positives and negatives are cut from each teacher ranking.

    ``pos_top``: ranks 1..pos_top are positives (1).  ``neg_from``: first negative rank
    (default ``pos_top + 1``).  ``neg_to``: last negative rank (default: the end).
    ``neg_count``: keep at most this many negatives, the best-ranked (hardest) first
    (default: all; ``kldiv`` needs the same count on every line, so it defaults to the
    smallest count any query has and skips queries with fewer).  ``depth``: ``listwise``
    keeps the top ``depth`` only.  ``normalize``: ``none`` keeps the teacher's scores,
    ``zscore`` standardises them per query (mean 0, sd 1).  ``scale`` multiplies them
    afterwards.  ``with_title``: passage text is ``title + " " + text`` when there is a
    title.  ``prompt``: ``flag`` only, written as each line's ``prompt`` (FlagEmbedding's
    per-line query instruction).
    """

    pos_top: int = 1
    neg_from: int | None = None
    neg_to: int | None = None
    neg_count: int | None = None
    depth: int | None = None
    normalize: Literal["none", "zscore"] = "none"
    scale: float = 1.0
    with_title: bool = True
    prompt: str | None = None

    def __post_init__(self) -> None:
        if self.pos_top < 1:
            raise ExportError(f"pos_top must be >= 1, got {self.pos_top}")
        if self.neg_from is not None and self.neg_from <= self.pos_top:
            raise ExportError(f"neg_from ({self.neg_from}) must be greater than pos_top ({self.pos_top})")
        if self.neg_to is not None and self.neg_to < self.first_negative:
            raise ExportError(f"neg_to ({self.neg_to}) is before neg_from ({self.first_negative})")
        if self.neg_count is not None and self.neg_count < 1:
            raise ExportError(f"neg_count must be >= 1, got {self.neg_count}")
        if self.depth is not None and self.depth < 1:
            raise ExportError(f"depth must be >= 1, got {self.depth}")
        if self.normalize not in ("none", "zscore"):
            raise ExportError(f"normalize must be none or zscore, got {self.normalize!r}")

    @property
    def first_negative(self) -> int:
        return self.neg_from if self.neg_from is not None else self.pos_top + 1


@dataclass
class ExportStats:
    queries: int = 0
    rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def passage_text(c: Candidate, with_title: bool = True) -> str:
    """The text a student model should see for a candidate."""
    if with_title and c.title:
        return f"{c.title} {c.text}".strip()
    return c.text


@dataclass(frozen=True)
class _QueryTexts:
    query: str
    docs: dict[str, Candidate]


def load_texts(input: Path, *, topics: Path | None = None, collection: Path | None = None) -> dict[str, _QueryTexts]:
    """Query text and candidate passages of every qid of a rerank input file."""
    out: dict[str, _QueryTexts] = {}
    item: QueryItem
    for item in read_queries(input, topics=topics, collection=collection):
        qid = item.query.qid
        assert qid is not None  # readers always set one
        if qid in out:
            raise ExportError(f"{input}: qid {qid!r} occurs twice, so its texts are ambiguous")
        out[qid] = _QueryTexts(item.query.text, {c.docid: c for c in item.candidates})
    return out


def _normalized(scores: list[float], opts: ExportOptions) -> list[float]:
    if opts.normalize == "zscore" and len(scores) > 1:
        mean = sum(scores) / len(scores)
        sd = (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5
        scores = [(x - mean) / sd if sd > 0 else 0.0 for x in scores]
    return [x * opts.scale for x in scores]


@dataclass(frozen=True)
class _Split:
    qid: str
    query: str
    pos: list[tuple[str, str, float]]  # (docid, text, score)
    neg: list[tuple[str, str, float]]
    ranked: list[tuple[str, str, float, int]]  # (docid, text, score, first_stage_rank)


def _split(result: RerankResult, texts: dict[str, _QueryTexts], opts: ExportOptions) -> _Split:
    qid = result.qid
    if qid is None or qid not in texts:
        raise ExportError(f"run has qid {qid!r}, which the input file does not have")
    qt = texts[qid]
    docs = sorted(result.ranking, key=lambda d: d.rank)
    scores = _normalized([d.score for d in docs], opts)
    ranked: list[tuple[str, str, float, int]] = []
    for d, score in zip(docs, scores, strict=True):
        cand = qt.docs.get(d.docid)
        if cand is None:
            raise ExportError(f"qid {qid}: docid {d.docid!r} of the run is not among the input's candidates")
        ranked.append((d.docid, passage_text(cand, opts.with_title), score, d.first_stage_rank))
    pos = [(d, t, sc) for d, t, sc, _ in ranked[: opts.pos_top]]
    hi = opts.neg_to if opts.neg_to is not None else len(ranked)
    neg = [(d, t, sc) for d, t, sc, _ in ranked[opts.first_negative - 1 : hi]]
    if opts.neg_count is not None:
        neg = neg[: opts.neg_count]
    return _Split(qid, qt.query, pos, neg, ranked)


def export_rows(
    results: Iterable[RerankResult],
    texts: dict[str, _QueryTexts],
    fmt: str,
    opts: ExportOptions | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """The export lines (as dicts, keys in schema order) for ``results``."""
    opts = opts or ExportOptions()
    stats = stats if stats is not None else ExportStats()
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    splits = (_split(r, texts, opts) for r in results)
    if fmt == "kldiv":
        yield from _kldiv(list(splits), opts, stats)
        return
    for sp in splits:
        stats.queries += 1
        if fmt == "listwise":
            ranked = sp.ranked[: opts.depth] if opts.depth else sp.ranked
            stats.rows += 1
            yield {
                "qid": sp.qid,
                "query": sp.query,
                "docids": [d for d, _, _, _ in ranked],
                "texts": [t for _, t, _, _ in ranked],
                "scores": [sc for _, _, sc, _ in ranked],
                "first_stage_ranks": [f for _, _, _, f in ranked],
            }
            continue
        if not sp.neg:  # margin-MSE needs a pair; FlagEmbedding samples from a non-empty list
            stats.skip("no negatives in range")
            continue
        if fmt == "margin-mse":
            for _, pt, ps in sp.pos:
                for _, nt, ns in sp.neg:
                    stats.rows += 1
                    yield {"query": sp.query, "positive": pt, "negative": nt, "label": ps - ns}
        else:  # flag
            row: dict[str, Any] = {
                "query": sp.query,
                "pos": [t for _, t, _ in sp.pos],
                "neg": [t for _, t, _ in sp.neg],
                "pos_scores": [sc for _, _, sc in sp.pos],
                "neg_scores": [sc for _, _, sc in sp.neg],
            }
            if opts.prompt is not None:
                row["prompt"] = opts.prompt
            stats.rows += 1
            yield row


def _kldiv(splits: list[_Split], opts: ExportOptions, stats: ExportStats) -> Iterator[dict[str, Any]]:
    n = opts.neg_count
    if n is None:
        counts = [len(sp.neg) for sp in splits if sp.neg]
        if not counts:
            return
        n = min(counts)
    for sp in splits:
        stats.queries += 1
        if len(sp.neg) < n:
            stats.skip(f"fewer than {n} negatives")
            continue
        negs = sp.neg[:n]
        for _, pt, ps in sp.pos:
            row: dict[str, Any] = {"query": sp.query, "positive": pt}
            for k, (_, nt, _) in enumerate(negs, start=1):
                row[f"negative_{k}"] = nt
            row["label"] = [ps, *(ns for _, _, ns in negs)]
            stats.rows += 1
            yield row


def write_export(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows as JSON lines atomically (tmp file + rename); return the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
