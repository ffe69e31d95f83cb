"""Judged scores for fitting: run journals (or result JSONL files) joined with TREC qrels."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.calibration.features import query_features
from rerankd.calibration.model import CalibrationError, settings_key
from rerankd.runs.journal import JournalError, read_journal

__all__ = ["JudgedQuery", "Samples", "load_samples", "read_qrels"]


@dataclass
class JudgedQuery:
    """One query's ranking: scores best first and 0/1 labels."""

    qid: str
    source: str
    scores: np.ndarray
    labels: np.ndarray
    unjudged: int = 0

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def features(self) -> dict[str, np.ndarray]:
        return query_features(self.scores)


@dataclass
class Samples:
    """Judged queries of one (model, strategy, settings)."""

    model: str
    strategy: str
    settings: dict[str, Any]
    queries: list[JudgedQuery] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def stack(self, idx: Sequence[int] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features and labels of the queries ``idx`` (all by default), concatenated."""
        qs = self.queries if idx is None else [self.queries[i] for i in idx]
        feats = [q.features() for q in qs]
        X = {k: np.concatenate([f[k] for f in feats]) for k in feats[0]} if feats else {}
        y = np.concatenate([q.labels for q in qs]) if qs else np.zeros(0)
        return X, y

    def data_sha256(self) -> str:
        """A hash of exactly what is fitted: every query's scores and labels, in order."""
        h = hashlib.sha256()
        for q in self.queries:
            h.update(f"{q.source}\t{q.qid}\t".encode())
            h.update(np.ascontiguousarray(q.scores, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(q.labels, dtype=np.int8).tobytes())
        return h.hexdigest()


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iter docid grade`` -> ``{qid: {docid: grade}}``."""
    out: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise CalibrationError(f"{path}:{n}: expected 'qid iter docid grade', got {line.strip()!r}")
            try:
                out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
            except ValueError:
                raise CalibrationError(f"{path}:{n}: grade {parts[3]!r} is not an integer") from None
    return out


def _journal_meta(path: Path) -> tuple[str, dict[str, Any]]:
    """``(model, strategy settings)`` recorded in a run journal's header."""
    try:
        contents = read_journal(path)
    except (JournalError, OSError) as e:
        raise CalibrationError(f"{path}: {e}") from None
    settings = contents.header.get("settings") or {}
    strategy = settings.get("strategy")
    model = settings.get("model")
    if not isinstance(strategy, dict) or "name" not in strategy:
        raise CalibrationError(f"{path}: the journal header records no strategy settings")
    if not model:
        first = next(iter(contents.results.values()), None)
        model = first.model if first is not None else None
    if not model:
        raise CalibrationError(f"{path}: the journal records no model (a --queue run without --model?)")
    return str(model), strategy


def load_samples(journals: Sequence[Path], qrels: Sequence[Path], grade: int = 1) -> Samples:
    """Judged queries of ``journals`` (paired with ``qrels`` in order, or one qrels for all).

    A passage is relevant when its grade is at least ``grade``; unjudged passages count as not
    relevant (as trec_eval does) and are counted.  Every journal must come from the same model
    and strategy settings, or the scores would mix scales.  Queries without judgements are skipped.
    """
    if not journals:
        raise CalibrationError("give at least one run journal")
    if len(qrels) not in (1, len(journals)):
        raise CalibrationError(
            f"give one --qrels for all journals or one per journal; got {len(qrels)} for {len(journals)}"
        )
    pairs = list(zip(journals, qrels if len(qrels) == len(journals) else [qrels[0]] * len(journals), strict=True))
    samples: Samples | None = None
    for journal, qrel_path in pairs:
        journal = Path(journal)
        model, strategy = _journal_meta(journal)
        if samples is None:
            samples = Samples(model, str(strategy["name"]), strategy)
        elif (model, settings_key(strategy)) != (samples.model, settings_key(samples.settings)):
            first = json.dumps(samples.settings, sort_keys=True)
            raise CalibrationError(
                f"{journal}: model {model!r} with strategy settings {json.dumps(strategy, sort_keys=True)} "
                f"differs from the first journal's ({samples.model!r}, {first}); "
                "calibrate each (model, strategy, settings) on its own"
            )
        judged = read_qrels(Path(qrel_path))
        samples.sources.append(str(journal))
        for index in sorted(res := read_journal(journal).results):
            result = res[index]
            grades = judged.get(str(result.qid))
            if not grades or not result.ranking:
                continue
            labels = np.array([1 if grades.get(d.docid, 0) >= grade else 0 for d in result.ranking], dtype=np.int8)
            samples.queries.append(
                JudgedQuery(
                    qid=str(result.qid),
                    source=journal.name,
                    scores=np.array([d.score for d in result.ranking], dtype=np.float64),
                    labels=labels,
                    unjudged=sum(1 for d in result.ranking if d.docid not in grades),
                )
            )
    assert samples is not None
    if not samples.queries:
        raise CalibrationError("no judged query in the journals: do the qrels' query ids match the runs'?")
    return samples
