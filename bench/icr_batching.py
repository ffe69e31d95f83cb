"""ICR on the hf engine at several concurrencies: s/query, queries/s and the batches formed.

Concurrent ICR queries share forward passes (their contexts are prefilled as one padded batch,
then their query suffixes); this runs the same queries with ``rerank_many`` at each
``--concurrency`` and prints wall time per query, the engine's batch sizes, and whether the
rankings equal those at concurrency 1 (float32 by default, so padding cannot flip a near tie).

    python bench/icr_batching.py --model smollm2-135m-instruct --limit 8 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from quality import DATASETS, _items  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dataset", default="noveleval", choices=sorted(DATASETS))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--max-words", type=int, default=60)
    ap.add_argument("--layers", default=None, help="ICR layer window START:END (default all layers)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()

    from rerankd.engines.hf.engine import HFEngine
    from rerankd.strategies import rerank_many
    from rerankd.types import ICRConfig, RerankRequest

    items = _items(args.data, args.dataset, args.limit)
    cfg = ICRConfig(max_words_per_passage=args.max_words, layers=args.layers)
    requests = [RerankRequest(query=q, candidates=c[: args.top_k], strategy=cfg) for q, c in items]
    engine = HFEngine.load(args.model, dtype=args.dtype, max_batch_size=max(args.concurrency))
    print(f"model={args.model} dtype={args.dtype} dataset={args.dataset} queries={len(requests)} "
          f"top_k={args.top_k} max_words={args.max_words} layers={cfg.layers}")  # fmt: skip
    print(f"{'concurrency':>11} {'s/query':>8} {'queries/s':>9} {'batches':>7} {'max batch':>9} {'same as c=1':>11}")

    async def go() -> None:
        await rerank_many(requests[:1], engine, concurrency=1)  # warm-up
        reference: list[list[str]] | None = None
        for c in args.concurrency:
            batches, biggest = engine.stats.batches, 0
            engine.stats.max_size = 0
            t0 = time.perf_counter()
            results = await rerank_many(requests, engine, concurrency=c)
            wall = time.perf_counter() - t0
            biggest = engine.stats.max_size
            orders = [r.docids for r in results]
            reference = reference or orders
            same = sum(a == b for a, b in zip(orders, reference, strict=True))
            print(
                f"{c:>11} {wall / len(requests):>8.2f} {len(requests) / wall:>9.3f} "
                f"{engine.stats.batches - batches:>7} {biggest:>9} {same:>6}/{len(requests)}"
            )
        await engine.aclose()

    asyncio.run(go())


if __name__ == "__main__":
    main()
