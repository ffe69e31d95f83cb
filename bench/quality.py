"""Ranking quality and cost of every strategy next to the first stage.

Each row (strategy x dataset) runs in its own subprocess so that its peak resident
memory is its own.  Prints nDCG@10, seconds per query and peak RSS, plus the
first-stage nDCG@10 of the same candidate lists.

    python bench/quality.py                       # the issue's table (slow on 2 cores)
    python bench/quality.py --rows first:noveleval --limit 3 --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DATASETS = {
    # name: (candidates file under --data, qrels, top-k, query limit, rel level for MAP/R)
    "noveleval": ("noveleval-2306/candidates.jsonl", "noveleval-2306/qrels.txt", 20, None, 1),
    "dl19": (
        "trec-dl-2019-passage-bm25top100/candidates.jsonl",
        "trec-dl-2019-passage-bm25top100/qrels.txt",
        20,
        None,
        2,
    ),
    "dl19-top100": (
        "trec-dl-2019-passage-bm25top100/candidates.jsonl",
        "trec-dl-2019-passage-bm25top100/qrels.txt",
        100,
        10,
        2,
    ),
}

DEFAULT_ROWS = [
    "sliding_window:noveleval",
    "full_ranking:noveleval",
    "first:noveleval",
    "icr:noveleval",
    "sliding_window:dl19",
    "full_ranking:dl19",
    "first:dl19",
    "icr:dl19",
    "icr:dl19-top100",
]


def _items(data: Path, dataset: str, limit: int | None):  # type: ignore[no-untyped-def]
    from rerankd.formats.inputs import read_queries

    rel_file, _, top_k, ds_limit, _ = DATASETS[dataset]
    n = min(x for x in (limit, ds_limit) if x) if (limit or ds_limit) else None
    items = []
    for it in read_queries(data / rel_file):
        items.append((it.query, it.candidates[:top_k]))
        if n and len(items) >= n:
            break
    return items


def _ndcg(run_lines: list[str], qrels: Path, rel_level: int) -> dict[str, float]:
    from rerankd.eval import evaluate

    with tempfile.NamedTemporaryFile("w", suffix=".trec", delete=False) as fh:
        fh.writelines(run_lines)
    try:
        return evaluate(fh.name, qrels, rel_level=rel_level)
    finally:
        os.unlink(fh.name)


def run_row(strategy: str, dataset: str, data: Path, model: str, limit: int | None, params: dict) -> dict:  # type: ignore[type-arg]
    """One row, in this process: load the engine, rerank, evaluate."""
    from pydantic import TypeAdapter

    from rerankd.engines.factory import load_engine
    from rerankd.formats.trec import trec_lines
    from rerankd.strategies import rerank
    from rerankd.types import RerankRequest, StrategyConfig

    items = _items(data, dataset, limit)
    _, qrels_rel, _, _, rel_level = DATASETS[dataset]
    qrels = data / qrels_rel
    first_stage = []
    for q, cands in items:
        first_stage += [f"{q.qid} Q0 {c.docid} {i + 1} {len(cands) - i} bm25\n" for i, c in enumerate(cands)]
    cfg = TypeAdapter(StrategyConfig).validate_python({"name": strategy, **params})
    t_load = time.perf_counter()
    engine = load_engine("hf", model)
    load_s = time.perf_counter() - t_load

    async def go() -> tuple[list[str], float, int, int]:
        lines: list[str] = []
        calls = warnings = 0
        t0 = time.perf_counter()
        for q, cands in items:
            res = await rerank(RerankRequest(query=q, candidates=cands, strategy=cfg), engine)
            lines += list(trec_lines(res))
            calls += res.usage.llm_calls
            warnings += len(res.warnings)
        dt = time.perf_counter() - t0
        await engine.aclose()
        return lines, dt, calls, warnings

    lines, dt, calls, warnings = asyncio.run(go())
    return {
        "strategy": strategy,
        "dataset": dataset,
        "queries": len(items),
        "first_stage_ndcg10": _ndcg(first_stage, qrels, rel_level)["nDCG@10"],
        "ndcg10": _ndcg(lines, qrels, rel_level)["nDCG@10"],
        "s_per_query": dt / max(1, len(items)),
        "llm_calls_per_query": calls / max(1, len(items)),
        "warnings": warnings,
        "load_s": load_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="strategy:dataset,...")
    ap.add_argument("--limit", type=int, default=None, help="queries per row (default: all)")
    ap.add_argument("--param", action="append", default=[], help="strategy:key=value (JSON value)")
    ap.add_argument("--out", type=Path, default=None, help="also append rows as JSONL here")
    ap.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    params: dict[str, dict] = {}  # type: ignore[type-arg]
    for p in args.param:
        strat, kv = p.split(":", 1)
        k, v = kv.split("=", 1)
        try:
            params.setdefault(strat, {})[k] = json.loads(v)
        except json.JSONDecodeError:
            params.setdefault(strat, {})[k] = v

    if args._row:
        strategy, dataset = args._row.split(":")
        print(json.dumps(run_row(strategy, dataset, args.data, args.model, args.limit, params.get(strategy, {}))))
        return

    rows = []
    print(f"model={args.model} data={args.data} limit={args.limit}", flush=True)
    header = (
        f"{'strategy':<15} {'dataset':<12} {'q':>3} {'first-stage':>11} {'nDCG@10':>8} {'delta':>7} "
        f"{'s/query':>8} {'calls/q':>7} {'peakRSS':>8} {'warn':>5}"
    )
    for row in args.rows.split(","):
        cmd = [sys.executable, __file__, "--_row", row, "--data", str(args.data), "--model", args.model]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        for p in args.param:
            cmd += ["--param", p]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(f"{row}: FAILED\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(json.dumps({**r, "model": args.model}) + "\n")
        print(f"done {row}: nDCG@10 {r['ndcg10']:.4f} ({r['s_per_query']:.1f} s/query)", flush=True)
    print()
    print(header)
    for r in rows:
        print(
            f"{r['strategy']:<15} {r['dataset']:<12} {r['queries']:>3} {r['first_stage_ndcg10']:>11.4f} "
            f"{r['ndcg10']:>8.4f} {r['ndcg10'] - r['first_stage_ndcg10']:>+7.4f} {r['s_per_query']:>8.2f} "
            f"{r['llm_calls_per_query']:>7.1f} {r['peak_rss_gib']:>7.2f}G {r['warnings']:>5}"
        )


if __name__ == "__main__":
    main()
