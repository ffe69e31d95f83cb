"""ICR ablation: nDCG@10 per passage order x calibration (x layer window) on the same attention passes.

For each query and passage order the engine computes the attention rows once (real query and
N/A), per layer; every calibration mode and every layer window is scored from those same rows,
so the table isolates the choices ICR makes.  Used to pick ``ICRConfig``'s defaults.

Layer windows (``--windows all,0:12,4:16``): nDCG@10 of each window comes from the per-layer
rows of the all-layer pass (a window's score is the sum of its layers' rows, exactly what
``-p layers=START:END`` computes); its s/query is measured by running ICR with that window
(early exit: the pass stops after layer END-1) on the first ``--time-queries`` queries, next to
the all-layer pass on the same queries.

    python bench/icr_ablation.py --dataset noveleval --model qwen2.5-coder-0.5b-instruct
    python bench/icr_ablation.py --dataset dl19 --limit 20 --dtype float32
    python bench/icr_ablation.py --dataset noveleval --orders first_stage \\
        --windows all,0:12,4:16,8:16,6:14 --time-queries 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from quality import DATASETS, _items  # noqa: E402

CALIBRATIONS = ("none", "na", "masked_na")


def parse_window(text: str, n_layers: int) -> tuple[int, int]:
    if text == "all":
        return (0, n_layers)
    start, _, end = text.partition(":")
    return (int(start), int(end))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dataset", default="noveleval", choices=sorted(DATASETS))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--orders", default="first_stage,reversed")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-words", type=int, default=300)
    ap.add_argument("--windows", default="all", help="Layer windows START:END (or all), comma-separated.")
    ap.add_argument(
        "--time-queries", type=int, default=None, help="Time each window on the first N queries (default all)."
    )
    ap.add_argument("--time-windows", default=None, help="Windows to time (default: every window of --windows).")
    args = ap.parse_args()

    from rerankd.engines.factory import load_engine
    from rerankd.engines.hf.attention import batched_context_query_attention
    from rerankd.engines.hf.engine import HFEngine
    from rerankd.eval import evaluate
    from rerankd.strategies.icr import plan_chunks, score_passages
    from rerankd.types import ContextAttention, ICRConfig, RerankRequest

    items = _items(args.data, args.dataset, args.limit)
    _, qrels_rel, _, _, rel_level = DATASETS[args.dataset]
    qrels = args.data / qrels_rel
    engine = load_engine("hf", args.model, dtype=args.dtype)
    assert isinstance(engine, HFEngine)
    n_layers = engine.num_layers
    windows = [parse_window(w.strip(), n_layers) for w in args.windows.split(",")]
    to_time = (
        windows if args.time_windows is None else [parse_window(w, n_layers) for w in args.time_windows.split(",")]
    )
    timed = [w for w in dict.fromkeys(to_time) if w != (0, n_layers)]
    n_timed = min(args.time_queries or len(items), len(items))
    orders = args.orders.split(",")
    runs: dict[tuple[str, tuple[int, int], str], list[str]] = {
        (o, w, c): [] for o in orders for w in windows for c in CALIBRATIONS
    }
    first_stage: list[str] = []
    seconds = {w: 0.0 for w in [(0, n_layers), *timed]}
    seconds_timed_all = 0.0

    async def go() -> None:
        nonlocal seconds_timed_all
        loop = asyncio.get_running_loop()
        # Warm-up (first-call kernel set-up would be charged to the first query): one layer of query 1.
        q, cands = items[0]
        req = RerankRequest(query=q, candidates=cands, strategy=ICRConfig(max_words_per_passage=args.max_words))
        _, warm = plan_chunks(req, engine.tokenizer, engine.context_size)[0][0]
        await engine.query_attention(warm.context, [warm.suffix, warm.na_suffix], layers=(0, 1))
        for n, (q, cands) in enumerate(items, 1):
            first_stage.extend(f"{q.qid} Q0 {c.docid} {i + 1} {len(cands) - i} bm25\n" for i, c in enumerate(cands))
            for order in orders:
                cfg = ICRConfig(doc_order=order, max_words_per_passage=args.max_words)  # type: ignore[arg-type]
                req = RerankRequest(query=q, candidates=cands, strategy=cfg)
                chunks, _ = plan_chunks(req, engine.tokenizer, engine.context_size)
                if len(chunks) != 1:
                    raise SystemExit(f"{q.qid}: does not fit one prompt; lower --max-words")
                indices, prompt = chunks[0]
                context_ids, offsets = engine.hf_tokenizer.encode_with_offsets(prompt.context)
                suffix_ids = [engine.tokenizer.encode(s) for s in (prompt.suffix, prompt.na_suffix)]
                t0 = time.perf_counter()
                [rows] = await loop.run_in_executor(
                    None,
                    lambda c=context_ids, s=suffix_ids: batched_context_query_attention(  # type: ignore[misc]
                        engine.hf_model, [(c, s)], pad_id=engine._pad_id, per_layer=True
                    ),
                )
                spent = time.perf_counter() - t0
                seconds[(0, n_layers)] += spent
                if n <= n_timed:
                    seconds_timed_all += spent
                    for w in timed:
                        t0 = time.perf_counter()
                        await engine.query_attention(prompt.context, [prompt.suffix, prompt.na_suffix], layers=w)
                        seconds[w] += time.perf_counter() - t0
                for w in windows:
                    att = ContextAttention(
                        token_offsets=offsets,
                        scores=[r[w[0] : w[1]].sum(dim=0).tolist() for r in rows],
                        prompt_tokens=0,
                    )
                    for cal in CALIBRATIONS:
                        scores, _ = score_passages(att, prompt.doc_char_spans, cal)  # type: ignore[arg-type]
                        by_cand = sorted(zip(indices, scores, strict=True), key=lambda t: (-t[1], t[0]))
                        runs[(order, w, cal)].extend(
                            f"{q.qid} Q0 {cands[i].docid} {r + 1} {s:.6f} icr\n" for r, (i, s) in enumerate(by_cand)
                        )
            print(f"\r{n}/{len(items)} queries", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        await engine.aclose()

    asyncio.run(go())

    def ndcg(lines: list[str]) -> float:
        with tempfile.NamedTemporaryFile("w", suffix=".trec", delete=False) as fh:
            fh.writelines(lines)
        try:
            return evaluate(fh.name, qrels, rel_level=rel_level)["nDCG@10"]
        finally:
            os.unlink(fh.name)

    base = ndcg(first_stage)
    all_s = seconds[(0, n_layers)] / len(items) / len(orders)
    print(
        f"model={args.model} ({n_layers} layers) dtype={args.dtype} dataset={args.dataset} queries={len(items)} "
        f"max_words={args.max_words} all-layer attention s/query/order={all_s:.2f}"
    )
    print(f"first stage nDCG@10 {base:.4f}")
    all_timed = seconds_timed_all / n_timed / len(orders)
    for order in orders:
        print(f"doc_order={order}")
        print(f"{'layers':<8} " + " ".join(f"{c:>10}" for c in CALIBRATIONS) + "   s/query   x all")
        for w in windows:
            cells = " ".join(f"{ndcg(runs[(order, w, c)]):>10.4f}" for c in CALIBRATIONS)
            if w == (0, n_layers):
                timing = f"{all_s:>9.2f}      1.00"
            elif w not in seconds:
                timing = f"{'-':>9} {'-':>9}"
            else:
                per = seconds[w] / n_timed / len(orders)
                timing = f"{per:>9.2f} {per / all_timed:>9.2f}"
            print(f"{f'{w[0]}:{w[1]}':<8} {cells} {timing}")
    if timed:
        print(
            f"(windows timed on the first {n_timed} queries, all layers {all_timed:.2f} s/query on those; "
            "'x all' is the ratio on those queries)"
        )


if __name__ == "__main__":
    main()
