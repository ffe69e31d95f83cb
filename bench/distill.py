"""Distillation bench: a qwen2.5-coder-0.5b ICR teacher, an all-MiniLM-L6-v2 cross-encoder student.

1. Teach: the teacher's run journals over the teaching queries (DL21 + DL22 BM25 top-20, passages
   cut to ``--max-words`` words; ``rerankd rerank``/``rerankd distill teach`` journals, resumable).
   ``--journal`` names them; a journal still being written is read up to its last complete line
   (a snapshot copy in the cache), and the bench says how many queries it trained on.
2. Train: ``rerankd distill train`` (RankNet by default) into the cache; a finished student is reused.
3. Evaluate on DL19 (never trained on) at top-100 and top-20, same word cap: nDCG@10 of BM25, of
   all-MiniLM-L6-v2 as a bi-encoder without training (cosine of mean-pooled embeddings), of the
   teacher (its DL19 top-20 journal: ``--teacher-dl19``), of the student; the student's agreement
   with the teacher (nDCG@10 with the teacher's top ten as graded labels, Kendall tau); ms/query of
   the student (measured here, one query at a time) and of the teacher (its journal's ``rerank_s``,
   measured on this machine when it ran); training time (the card).
4. Cascade (``--cascade``): student over top-100, the teacher over the student's top-20, as
   ``rerankd rerank --strategy cascade`` (journal in the cache: a re-run only adds queries), compared
   with the teacher over BM25's top-20 on the queries both cover (paired bootstrap CI).

5. Speed side by side (``--speed N``): the teacher (hf engine, the machine's default dtype) and the
   student over the same first N DL19 top-20 queries, alternating query by query in this process.

    python bench/distill.py --journal A.journal.jsonl --journal B.journal.jsonl \
        --teacher-dl19 dl19.top20.w100.trec.journal.jsonl [--teacher-strategy first] \
        [--teacher-dl19-100 dl19.top100.journal.jsonl] [--cascade] [--cascade-limit N] [--speed N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BENCH_DATA", REPO.parent / "shared" / "data"))
DL19 = DATA / "trec-dl-2019-passage-bm25top100"
TEACHER = "qwen2.5-coder-0.5b-instruct"

from rerankd.distill.evaluate import agreement, first_stage_result  # noqa: E402
from rerankd.eval import compare, score_run  # noqa: E402
from rerankd.formats.inputs import QueryItem, read_queries  # noqa: E402
from rerankd.formats.trec import trec_lines  # noqa: E402
from rerankd.runs import read_results  # noqa: E402
from rerankd.types import PointwiseConfig, RankedDoc, RerankRequest, RerankResult  # noqa: E402


def capped(src: Path, dst: Path, top_k: int, words: int) -> Path:
    """``src``'s first ``top_k`` candidates, passages cut to ``words`` words (written once)."""
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open() as fi, dst.open("w") as fo:
        for line in fi:
            row = json.loads(line)
            row["candidates"] = row["candidates"][:top_k]
            for c in row["candidates"]:
                c["text"] = " ".join(c["text"].split()[:words])
            fo.write(json.dumps(row) + "\n")
    return dst


def snapshot(journal: Path, cache: Path) -> tuple[Path, int]:
    """A copy of ``journal`` up to its last complete line (a run may still be writing it)."""
    data = journal.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    # Keyed by the full path: two teachers' journals of the same query file share a name.
    tag = hashlib.sha256(str(journal.resolve()).encode()).hexdigest()[:8]
    dst = cache / "snapshots" / f"{tag}-{journal.name}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return dst, data.count(b"\n") - 1


def write_run(path: Path, results: list[RerankResult], tag: str) -> Path:
    with path.open("w") as fh:
        for r in results:
            fh.writelines(trec_lines(r, tag))
    return path


def minilm_bi(items: list[QueryItem]) -> list[RerankResult]:
    """all-MiniLM-L6-v2 used as a bi-encoder, no training: cosine of normalised mean-pooled embeddings."""
    from bench.feedback import MiniLM, minilm_dir

    enc = MiniLM(minilm_dir(), max_length=128)
    out = []
    for it in items:
        q = enc.encode([it.query.text])[0]
        d = enc.encode([c.text for c in it.candidates])
        sims = d @ q
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
        out.append(
            RerankResult(
                qid=it.query.qid,
                ranking=[
                    RankedDoc(docid=it.candidates[i].docid, rank=r + 1, score=float(sims[i]), first_stage_rank=i + 1)
                    for r, i in enumerate(order)
                ],
                strategy="bi_encoder",
                model="all-MiniLM-L6-v2",
            )
        )
    return out


def student_runs(student: Path, items: list[QueryItem]) -> tuple[list[RerankResult], float]:
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine
    from rerankd.strategies import rerank

    engine = CrossEncoderEngine.load(str(student), device="cpu", max_length=128)

    async def run() -> tuple[list[RerankResult], float]:
        out, total = [], 0.0
        for it in items:
            req = RerankRequest(query=it.query, candidates=it.candidates, strategy=PointwiseConfig())
            t0 = time.perf_counter()
            out.append(await rerank(req, engine))
            total += time.perf_counter() - t0
        return out, 1000 * total / len(items)

    return asyncio.run(run())


def side_by_side(student: Path, strategy: str, items: list[QueryItem]) -> tuple[float, float]:
    """ms/query of the teacher and of the student over the same queries, alternating, one process."""
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine
    from rerankd.engines.factory import load_engine
    from rerankd.runs.requests import strategy_config
    from rerankd.strategies import rerank

    teacher = load_engine("hf", TEACHER, device="cpu")
    pupil = CrossEncoderEngine.load(str(student), device="cpu", max_length=128)
    t_cfg, s_cfg = strategy_config(strategy, []), PointwiseConfig()

    async def run() -> tuple[float, float]:
        t_total = s_total = 0.0
        for it in items:
            for cfg, engine in ((t_cfg, teacher), (s_cfg, pupil)):
                t0 = time.perf_counter()
                await rerank(RerankRequest(query=it.query, candidates=it.candidates, strategy=cfg), engine)
                took = time.perf_counter() - t0
                if engine is teacher:
                    t_total += took
                else:
                    s_total += took
        await teacher.aclose()
        await pupil.aclose()
        return 1000 * t_total / len(items), 1000 * s_total / len(items)

    return asyncio.run(run())


def rerankd(*args: str) -> None:
    cmd = [sys.executable, "-m", "rerankd", *args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(
        cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--journal", type=Path, action="append", required=True, help="teacher journal (teaching queries)")
    ap.add_argument("--teacher-dl19", type=Path, help="the teacher's DL19 top-20 journal (same word cap)")
    ap.add_argument(
        "--teacher-dl19-100", type=Path, help="the teacher's DL19 top-100 journal (may cover fewer queries)"
    )
    ap.add_argument("--teacher-strategy", default="icr", help="the teacher's strategy (labels, cascade, --speed)")
    ap.add_argument("--speed", type=int, default=0, help="time teacher and student side by side on N DL19 queries")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench-distill")
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--loss", default="ranknet")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--docs-per-query", type=int, default=10, help="teacher-ranked docs per query (CPU budget)")
    ap.add_argument("--max-length", type=int, default=128, help="student tokens per pair")
    ap.add_argument("--limit-100", type=int, default=15, help="first N DL19 queries at top-100 (CPU budget)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=2, help="queries per step")
    ap.add_argument("--tag", default="", help="suffix of the student folder")
    ap.add_argument("--heldout", type=float, default=0.1)
    ap.add_argument("--cascade", action="store_true", help="run the cascade on DL19 (slow: the teacher runs)")
    ap.add_argument("--cascade-limit", type=int, default=None, help="first N DL19 queries for the cascade")
    args = ap.parse_args()
    cache: Path = args.cache
    snaps = []
    for j in args.journal:
        snap, n = snapshot(j, cache)
        print(f"teaching journal {j.name}: {n} queries", flush=True)
        snaps.append(snap)
    student = cache / f"student-{args.loss}{args.tag}"
    journals = [a for s in snaps for a in ("-j", str(s))]
    rerankd("distill", "train", *journals, "-o", str(student), "--loss", args.loss, "--epochs", str(args.epochs),
            "--lr", str(args.lr), "--heldout", str(args.heldout), "--device", "cpu",
            "--docs-per-query", str(args.docs_per_query), "--max-length", str(args.max_length),
            "--batch-size", str(args.batch_size))  # fmt: skip
    card = json.loads((student / "rerankd-student.json").read_text())

    qrels = DL19 / "qrels.txt"
    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    teacher20: dict[str | None, RerankResult] = {}
    teacher100: dict[str | None, RerankResult] = {}
    if args.teacher_dl19:
        snap, _ = snapshot(args.teacher_dl19, cache)
        teacher20 = {r.qid: r for r in read_results(snap)}
    if args.teacher_dl19_100:
        snap, _ = snapshot(args.teacher_dl19_100, cache)
        teacher100 = {r.qid: r for r in read_results(snap)}
    t_name = args.teacher_strategy
    lines = []
    for depth in (100, 20):
        items = list(
            read_queries(
                capped(
                    DL19 / "candidates.jsonl",
                    cache / "inputs" / f"dl19.top{depth}.w{args.max_words}.jsonl",
                    depth,
                    args.max_words,
                )
            )
        )
        if depth == 100 and args.limit_100:
            items = items[: args.limit_100]
        systems: dict[str, list[RerankResult]] = {"bm25": [first_stage_result(it) for it in items]}
        bi_run = runs / f"dl19.top{depth}.minilm_bi.trec"
        if not bi_run.exists():  # no training involved: computed once
            write_run(bi_run, minilm_bi(items), "minilm_bi")
        systems["student"], student_ms = student_runs(student, items)
        teacher_at = teacher20 if depth == 20 else teacher100
        picked = [teacher_at[it.query.qid] for it in items if it.query.qid in teacher_at]
        if picked:
            systems["teacher"] = picked
        scores = {k: score_run(write_run(runs / f"dl19.top{depth}.{k}.trec", v, k), qrels) for k, v in systems.items()}
        scores = {"bm25": scores.pop("bm25"), "minilm_bi": score_run(bi_run, qrels), **scores}
        lines.append(
            f"\nDL19 BM25 top-{depth} ({len(items)} queries; passages cut to {args.max_words} words; "
            f"teacher {TEACHER} {t_name})"
        )
        lines.append(f"{'system':<12}{'queries':>8}{'nDCG@10':>9}{'ms/query':>10}")
        for k, s in scores.items():
            ms = student_ms if k == "student" else None
            if k == "teacher":
                ts = [r.timings.get("rerank_s", 0.0) for r in systems["teacher"]]
                ms = 1000 * sum(ts) / len(ts)
            nd = np.mean([s.per_query[q]["nDCG@10"] for q in s.queries])
            lines.append(f"{k:<12}{len(s.queries):>8}{nd:>9.4f}{(f'{ms:.1f}' if ms else '-'):>10}")
        pairs_ = (("bm25", "student"), ("minilm_bi", "student"), ("bm25", "teacher"), ("teacher", "student"))
        for a, b in pairs_:
            if a in scores and b in scores:
                c = compare(scores[a], scores[b], "nDCG@10")
                lines.append(
                    f"  {b} - {a}: {c.delta:+.4f} (95% CI {c.ci_low:+.4f} .. {c.ci_high:+.4f}; {c.queries} queries)"
                )
        if teacher20:
            pairs = [agreement(r, teacher20[r.qid]) for r in systems["student"] if r.qid in teacher20]
            lines.append(
                f"  student vs teacher (top-{depth}, teacher's top-20 ranking as labels): "
                f"agreement nDCG@10 {np.mean([p[0] for p in pairs]):.4f}, "
                f"Kendall tau {np.mean([p[1] for p in pairs]):.4f} ({len(pairs)} queries)"
            )
            if "teacher" in systems and depth == 20:
                ratio = (1000 * np.mean([r.timings.get("rerank_s", 0.0) for r in systems["teacher"]])) / student_ms
                lines.append(f"  student time / teacher time = 1/{ratio:.0f}")
    lines.append(
        f"\nstudent: {card['base']} cross-encoder, {card['loss']}, {card['steps']} steps, trained in "
        f"{card['train_seconds']:.0f}s on {len(card['train_queries'])} queries "
        f"({len(card['heldout_queries'])} held out); "
        f"teacher {card['teacher']['model']} {card['teacher']['strategy']['name']}"
    )

    if args.cascade:
        inp = capped(
            DL19 / "candidates.jsonl", cache / "inputs" / f"dl19.top100.w{args.max_words}.jsonl", 100, args.max_words
        )
        out = cache / "cascade" / f"dl19.{student.name}.trec"
        out.parent.mkdir(parents=True, exist_ok=True)
        n_casc = args.cascade_limit or args.limit_100
        limit = ["--limit", str(n_casc)] if n_casc else []
        rerankd("rerank", str(inp), "-o", str(out), "--strategy", "cascade", "-p", f"student={student}",
                "-p", "top_k=20", "-p", "max_length=128", "-p", f'llm={{"name": "{t_name}"}}',
                "--model", TEACHER, "--device", "cpu", *limit)  # fmt: skip
        casc = list(read_results(Path(str(out) + ".journal.jsonl")))
        s_c = score_run(write_run(runs / "dl19.cascade.trec", casc, "cascade"), qrels)
        lines.append(f"\nCascade (student over top-100, teacher {t_name} over its top-20): {len(casc)} DL19 queries")
        if teacher20:
            s_t = score_run(runs / "dl19.top20.teacher.trec", qrels)
            c = compare(s_t, s_c, "nDCG@10")
            t_c = np.mean([r.timings["student_s"] + r.timings["llm_s"] for r in casc])
            t_llm = np.mean([r.timings["llm_s"] for r in casc])
            t_s = np.mean([r.timings["student_s"] for r in casc])
            t_t = np.mean([teacher20[r.qid].timings.get("rerank_s", 0.0) for r in casc if r.qid in teacher20])
            lines.append(
                f"  nDCG@10 cascade {c.mean_b:.4f} vs teacher over BM25 top-20 {c.mean_a:.4f}: {c.delta:+.4f} "
                f"(95% CI {c.ci_low:+.4f} .. {c.ci_high:+.4f}; {c.wins}/{c.ties}/{c.losses} w/t/l, {c.queries} queries)"
            )
            lines.append(
                f"  time (same run): student over top-100 {1000 * t_s:.0f} ms/query, teacher over the student's "
                f"top-20 {1000 * t_llm:.0f} ms/query; cascade = {t_c / t_llm:.2f}x the teacher's top-20 time"
            )
            lines.append(f"  (teacher's DL19 top-20 journal, other load: {1000 * t_t:.0f} ms/query)")
    if args.speed:
        items = list(read_queries(cache / "inputs" / f"dl19.top20.w{args.max_words}.jsonl"))[: args.speed]
        t_ms, s_ms = side_by_side(student, t_name, items)
        lines.append(
            f"\nSide by side, one process, first {len(items)} DL19 queries at top-20: teacher {t_name} "
            f"{t_ms:,.0f} ms/query, student {s_ms:,.0f} ms/query: student = 1/{t_ms / s_ms:.0f} of the teacher"
        )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
