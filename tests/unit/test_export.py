"""Distillation exports: schemas, cut-offs, and loading by the libraries that consume them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.formats.export import ExportError, ExportOptions, ExportStats, export_rows, load_texts, write_export
from rerankd.formats.inputs import read_queries
from rerankd.runs import ResumableRun, read_results
from rerankd.types import RankedDoc, RerankRequest, RerankResult, SlidingWindowConfig

N_QUERIES, N_DOCS = 3, 8


@pytest.fixture()
def run_files(tmp_path: Path) -> tuple[Path, Path]:
    """A query file (with titles) and the journal of a run over it whose teacher reverses
    the first-stage order, scoring rank r with 10 - r."""
    queries = tmp_path / "queries.jsonl"
    with queries.open("w") as fh:
        for i in range(N_QUERIES):
            cands = [
                {"docid": f"q{i}d{j}", "title": f"T{j}" if j % 2 == 0 else None, "text": f"text {i}-{j}"}
                for j in range(N_DOCS)
            ]
            fh.write(json.dumps({"qid": f"q{i}", "query": f"query {i}", "candidates": cands}) + "\n")
    reqs = [
        RerankRequest(query=it.query, candidates=it.candidates, strategy=SlidingWindowConfig())
        for it in read_queries(queries)
    ]

    async def teacher(rs: Sequence[RerankRequest]) -> AsyncIterator[tuple[int, RerankResult]]:
        for i, r in enumerate(rs):
            docs = list(reversed(r.candidates))
            ranking = [
                RankedDoc(docid=c.docid, rank=k, score=10.0 - k, first_stage_rank=N_DOCS - k + 1)
                for k, c in enumerate(docs, start=1)
            ]
            yield i, RerankResult(qid=r.query.qid, ranking=ranking, strategy="t", model="m")

    out = tmp_path / "run.trec"
    run = ResumableRun(reqs, out, settings={"x": 1}, inputs={"input": str(queries)}, progress=False)
    run.open()
    asyncio.run(run.run(teacher))
    run.finish()
    return queries, out.with_name(out.name + ".journal.jsonl")


def rows(run_files: tuple[Path, Path], fmt: str, **opts: Any) -> list[dict[str, Any]]:
    queries, journal = run_files
    return list(export_rows(read_results(journal), load_texts(queries), fmt, ExportOptions(**opts)))


def test_listwise_rows(run_files: tuple[Path, Path]) -> None:
    out = rows(run_files, "listwise")
    assert len(out) == N_QUERIES
    r = out[0]
    assert list(r) == ["qid", "query", "docids", "texts", "scores", "first_stage_ranks"]
    assert r["qid"] == "q0" and r["query"] == "query 0"
    assert r["docids"] == [f"q0d{j}" for j in range(N_DOCS - 1, -1, -1)]
    assert r["texts"][0] == "text 0-7" and r["texts"][1] == "T6 text 0-6"  # title prefixed
    assert r["scores"] == [10.0 - k for k in range(1, N_DOCS + 1)]
    assert r["first_stage_ranks"] == list(range(N_DOCS, 0, -1))
    short = rows(run_files, "listwise", depth=3, with_title=False, normalize="zscore")[0]
    assert len(short["docids"]) == 3 and short["texts"][1] == "text 0-6"
    assert short["scores"][0] == pytest.approx(1.5275, abs=1e-4)  # z-scored over all 8, then cut


def test_margin_mse_rows_and_cutoffs(run_files: tuple[Path, Path]) -> None:
    out = rows(run_files, "margin-mse", pos_top=2, neg_from=5, neg_count=2)
    assert len(out) == N_QUERIES * 2 * 2
    assert all(list(r) == ["query", "positive", "negative", "label"] for r in out)
    first = out[0]
    # positives: ranks 1-2 (d7, d6); negatives: ranks 5-6 (d3, d2); label = s_pos - s_neg
    assert first["positive"] == "text 0-7" and first["negative"] == "text 0-3"
    assert first["label"] == pytest.approx((10 - 1) - (10 - 5))
    assert [r["label"] for r in out[:4]] == [4.0, 5.0, 3.0, 4.0]


def test_kldiv_rows(run_files: tuple[Path, Path]) -> None:
    out = rows(run_files, "kldiv", neg_count=3)
    assert len(out) == N_QUERIES
    r = out[0]
    assert list(r) == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert r["label"] == [9.0, 8.0, 7.0, 6.0]
    # Without neg_count every line gets the smallest count any query has (here all 7).
    assert len(rows(run_files, "kldiv")[0]["label"]) == N_DOCS


def test_flag_rows(run_files: tuple[Path, Path]) -> None:
    out = rows(run_files, "flag", pos_top=1, neg_from=3, neg_to=6, prompt="Represent this query: ")
    r = out[0]
    assert list(r) == ["query", "pos", "neg", "pos_scores", "neg_scores", "prompt"]
    assert r["pos"] == ["text 0-7"] and r["pos_scores"] == [9.0]
    assert len(r["neg"]) == len(r["neg_scores"]) == 4 and r["neg_scores"] == [7.0, 6.0, 5.0, 4.0]
    assert "prompt" not in rows(run_files, "flag")[0]


def test_queries_without_negatives_are_skipped(run_files: tuple[Path, Path]) -> None:
    queries, journal = run_files
    stats = ExportStats()
    opts = ExportOptions(pos_top=N_DOCS)
    out = list(export_rows(read_results(journal), load_texts(queries), "flag", opts, stats))
    assert out == [] and stats.skipped == {"no negatives in range": N_QUERIES}


def test_bad_options_and_mismatched_inputs(run_files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="neg_from"):
        ExportOptions(pos_top=3, neg_from=2)
    with pytest.raises(ExportError, match="unknown export format"):
        rows(run_files, "triplets")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"qid": "zz", "query": "q", "candidates": [{"docid": "a", "text": "t"}]}) + "\n")
    with pytest.raises(ExportError, match="qid 'q0', which the input file does not have"):
        list(export_rows(read_results(run_files[1]), load_texts(other), "listwise"))


def test_datasets_loads_every_format_with_the_expected_features(run_files: tuple[Path, Path], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from datasets import List, Value

    def load(fmt: str, **opts: Any) -> Any:
        path = tmp_path / f"{fmt}.jsonl"
        write_export(rows(run_files, fmt, **opts), path)
        return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))

    s = Value("string")
    f = Value("float64")
    mm = load("margin-mse", pos_top=2, neg_count=3)
    # sentence-transformers: every non-label column is an input, in order; the label column is "label".
    assert mm.features == datasets.Features({"query": s, "positive": s, "negative": s, "label": f})
    kl = load("kldiv", neg_count=2)
    assert kl.column_names == ["query", "positive", "negative_1", "negative_2", "label"]
    assert kl.features["label"] == List(f) and len(kl[0]["label"]) == 3
    fl = load("flag", neg_count=4)
    # FlagEmbedding's AbsEmbedderTrainDataset: pos/neg lists of text, pos_scores/neg_scores lists of numbers.
    assert fl.features == datasets.Features(
        {"query": s, "pos": List(s), "neg": List(s), "pos_scores": List(f), "neg_scores": List(f)}
    )
    for row in fl:
        assert len(row["pos"]) == len(row["pos_scores"]) >= 1
        assert len(row["neg"]) == len(row["neg_scores"]) >= 1
    lw = load("listwise")
    assert lw.features["texts"] == List(s) and lw.features["scores"] == List(f)


def test_sentence_transformers_trains_on_the_exports(
    run_files: tuple[Path, Path], tmp_path: Path, tiny_model_dir: Path
) -> None:
    """One training step of MarginMSELoss and DistillKLDivLoss on the exports."""
    pytest.importorskip("sentence_transformers")
    datasets = pytest.importorskip("datasets")
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    word = Transformer(str(tiny_model_dir), max_seq_length=32)
    if word.tokenizer.pad_token is None:
        word.tokenizer.pad_token = "<|endoftext|>"
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
    for fmt, loss, opts in (
        ("margin-mse", losses.MarginMSELoss(model), {"pos_top": 2, "neg_count": 2}),
        ("kldiv", losses.DistillKLDivLoss(model), {"neg_count": 3}),
    ):
        path = tmp_path / f"{fmt}.jsonl"
        write_export(rows(run_files, fmt, **opts), path)
        ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / f"out-{fmt}"),
            max_steps=1,
            per_device_train_batch_size=2,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
        )
        result = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
        assert result.global_step == 1 and result.training_loss == result.training_loss  # finite, not NaN


def test_cli_export_reads_the_input_recorded_in_the_journal(run_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, journal = run_files
    out = tmp_path / "flag.jsonl"
    res = CliRunner().invoke(app, ["export", str(journal), "--format", "flag", "-o", str(out), "--neg-count", "2"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == N_QUERIES and lines[0]["neg_scores"] == [8.0, 7.0]
    assert "exported 3 flag lines from 3 queries" in res.output

    # A plain result JSONL has no header: --input is then required.
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(r.model_dump_json() + "\n" for r in read_results(journal)))
    res = CliRunner().invoke(app, ["export", str(plain), "-f", "listwise", "-o", str(out)])
    assert res.exit_code == 2 and "--input" in res.output
    args = ["export", str(plain), "-f", "listwise", "-o", str(out), "--input", str(run_files[0])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == N_QUERIES
