"""Student folders: a cross-encoder saved by ``rerankd distill train``, its card and its name.

A student folder is a transformers sequence-classification model with one output (what
sentence-transformers' ``CrossEncoder.save_pretrained`` writes) plus ``rerankd-student.json``,
the card: teacher, strategy, data hash, loss, steps and figures.  A student trained with
``--name NAME`` is registered: a file ``NAME`` in the students folder of the rerankd cache
holds its folder's path, so ``NAME`` works wherever a model name does (``--model NAME``,
``RERANKD_MODEL``, a cascade's ``student``).  Torch-free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rerankd.models.students import register_name

__all__ = [
    "CARD_FILE",
    "NotAStudentError",
    "StudentCard",
    "check_cross_encoder_folder",
    "read_card",
    "register_student",
    "write_card",
]

CARD_FILE = "rerankd-student.json"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model")


class NotAStudentError(ValueError):
    """A folder that is not a (student) cross-encoder; the message names what is missing."""


class StudentCard(BaseModel):
    """``rerankd-student.json``: where a student comes from and what it scored."""

    model_config = ConfigDict(extra="allow")

    rerankd_student: int = 1
    kind: str = "cross_encoder"
    """``cross_encoder`` (served by the cross_encoder engine) or ``bi_encoder`` (re-retrieval)."""
    base: str
    teacher: dict[str, Any] = Field(default_factory=dict)
    """The teacher runs: model, strategy settings, journals."""
    data_sha256: str
    loss: str
    steps: int = 0
    epochs: float = 0.0
    seed: int = 0
    train_queries: list[str] = Field(default_factory=list)
    heldout_queries: list[str] = Field(default_factory=list)
    train_seconds: float = 0.0
    """Wall time of the training run that finished (after the last resume)."""
    resumed_from_step: int = 0
    """The checkpoint step training resumed from (0: it ran in one go)."""
    config: dict[str, Any] = Field(default_factory=dict)
    log: list[dict[str, Any]] = Field(default_factory=list)
    """The trainer's loss log."""
    figures: dict[str, Any] = Field(default_factory=dict)
    """Evaluation figures (``rerankd distill eval``), by query set."""


def write_card(folder: Path, card: StudentCard) -> Path:
    """Write ``card`` into ``folder`` (atomically)."""
    path = folder / CARD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_card(folder: Path) -> StudentCard:
    """The card of a student ``folder``; :class:`NotAStudentError` naming what is missing or wrong."""
    path = folder / CARD_FILE
    if not path.is_file():
        check_cross_encoder_folder(folder)
        raise NotAStudentError(f"{folder} is not a rerankd student: {CARD_FILE} is missing")
    try:
        card = StudentCard.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise NotAStudentError(f"{path}: {where}: {err['msg']}") from None
    if card.kind == "cross_encoder":
        check_cross_encoder_folder(folder)
    return card


def check_cross_encoder_folder(folder: Path) -> None:
    """Fail with :class:`NotAStudentError` unless ``folder`` holds a one-output sequence-classification
    model: ``config.json`` (with ``num_labels`` 1), weights and a tokenizer."""
    if not folder.is_dir():
        raise NotAStudentError(f"{folder} is not a folder")
    missing = []
    config = folder / "config.json"
    if not config.is_file():
        missing.append("config.json")
    if not any((folder / w).is_file() for w in _WEIGHTS):
        missing.append(f"weights ({' or '.join(_WEIGHTS)})")
    if not any((folder / t).is_file() for t in _TOKENIZER):
        missing.append(f"a tokenizer ({' or '.join(_TOKENIZER)})")
    if missing:
        raise NotAStudentError(f"{folder} is not a cross-encoder folder: missing {', '.join(missing)}")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise NotAStudentError(f"{config}: not valid JSON ({e})") from None
    archs = cfg.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise NotAStudentError(
            f"{config}: architectures {archs} has no *ForSequenceClassification model (a cross-encoder's head)"
        )
    labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2
    if labels != 1:
        raise NotAStudentError(f"{config}: a cross-encoder student has one output (num_labels 1), got {labels}")


def register_student(name: str, folder: Path) -> Path:
    """Register ``name`` for the student ``folder`` (its card checked first); returns the name's file."""
    read_card(folder)
    return register_name(name, folder)
