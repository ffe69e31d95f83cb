"""ICR ablation: nDCG@10 per passage order x calibration (x dtype) on the same attention passes.

For each query and passage order the engine computes the attention rows once (real query and
N/A); every calibration mode is scored from those same rows, so the table isolates the
choices ICR makes.  Used to pick ``ICRConfig``'s defaults.

    python bench/icr_ablation.py --dataset noveleval --model qwen2.5-coder-0.5b-instruct
    python bench/icr_ablation.py --dataset dl19 --limit 20 --dtype float32
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dataset", default="noveleval", choices=sorted(DATASETS))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--orders", default="first_stage,reversed")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-words", type=int, default=300)
    args = ap.parse_args()

    from rerankd.engines.factory import load_engine
    from rerankd.eval import evaluate
    from rerankd.strategies.icr import plan_chunks, score_passages
    from rerankd.types import ICRConfig, RerankRequest

    items = _items(args.data, args.dataset, args.limit)
    _, qrels_rel, _, _, rel_level = DATASETS[args.dataset]
    qrels = args.data / qrels_rel
    engine = load_engine("hf", args.model, dtype=args.dtype)
    orders = args.orders.split(",")
    runs: dict[tuple[str, str], list[str]] = {(o, c): [] for o in orders for c in CALIBRATIONS}
    first_stage: list[str] = []
    seconds = 0.0

    async def go() -> None:
        nonlocal seconds
        for n, (q, cands) in enumerate(items, 1):
            first_stage.extend(f"{q.qid} Q0 {c.docid} {i + 1} {len(cands) - i} bm25\n" for i, c in enumerate(cands))
            for order in orders:
                cfg = ICRConfig(doc_order=order, max_words_per_passage=args.max_words)  # type: ignore[arg-type]
                req = RerankRequest(query=q, candidates=cands, strategy=cfg)
                chunks, _ = plan_chunks(req, engine.tokenizer, engine.context_size)
                if len(chunks) != 1:
                    raise SystemExit(f"{q.qid}: does not fit one prompt; lower --max-words")
                indices, prompt = chunks[0]
                t0 = time.perf_counter()
                att = await engine.query_attention(prompt.context, [prompt.suffix, prompt.na_suffix])
                seconds += time.perf_counter() - t0
                for cal in CALIBRATIONS:
                    scores, _ = score_passages(att, prompt.doc_char_spans, cal)  # type: ignore[arg-type]
                    by_cand = sorted(zip(indices, scores, strict=True), key=lambda t: (-t[1], t[0]))
                    runs[(order, cal)].extend(
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
    print(
        f"model={args.model} dtype={args.dtype} dataset={args.dataset} queries={len(items)} "
        f"max_words={args.max_words} attention s/query/order={seconds / len(items) / len(orders):.2f}"
    )
    print(f"first stage nDCG@10 {base:.4f}")
    print(f"{'doc_order':<12} " + " ".join(f"{c:>10}" for c in CALIBRATIONS))
    for order in orders:
        print(f"{order:<12} " + " ".join(f"{ndcg(runs[(order, c)]):>10.4f}" for c in CALIBRATIONS))


if __name__ == "__main__":
    main()
