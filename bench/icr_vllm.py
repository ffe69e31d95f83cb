"""ICR on the vllm engine (rerankd's vLLM plugin) against the hf engine: equality and speed.

Same model, dtype, candidates and ICR settings on both engines:

1. equality: every query reranked alone on each engine; the largest per-passage score difference
   over all queries, and on how many queries the two rankings are identical (target: 20 of
   NovelEval's 21);
2. speed: s/query and queries/s at concurrency 1 (the timings of pass 1) and at each other
   ``--concurrency`` (``rerank_many``), over the first ``--speed-limit`` queries (after a warm-up
   query; the vllm engine runs ``attention="only"``, its pooling engine started at load).

    python bench/icr_vllm.py                       # NovelEval, qwen2.5-coder-0.5b-instruct, float32
    python bench/icr_vllm.py --model smollm2-135m-instruct --limit 4 --concurrency 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _requests(path: Path, limit: int | None, top_k: int, cfg: Any) -> list[Any]:
    from rerankd.formats.inputs import read_queries
    from rerankd.types import RerankRequest

    items = list(read_queries(path))[:limit]
    return [RerankRequest(query=it.query, candidates=it.candidates[:top_k], strategy=cfg) for it in items]


async def _timed(engine: Any, requests: list[Any], concurrency: int) -> tuple[list[Any], float]:
    from rerankd.strategies import rerank_many

    t0 = time.perf_counter()
    results = await rerank_many(requests, engine, concurrency=concurrency)
    return results, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=Path, default=REPO / "examples" / "noveleval" / "candidates.jsonl")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--context-size", type=int, default=None, help="both engines (default: the model's)")
    ap.add_argument("--limit", type=int, default=None, help="first N queries (default all)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=300, help="ICR max_words_per_passage")
    ap.add_argument("--speed-limit", type=int, default=None, help="speed over the first N queries (default all)")
    ap.add_argument("--layers", default=None, help="ICR layer window START:END (default all layers)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--kv-cache-gib", type=float, default=2.0, help="the vllm attention engine's KV cache (CPU)")
    args = ap.parse_args()

    from rerankd.engines.hf.engine import HFEngine
    from rerankd.engines.vllm.engine import VLLMEngine
    from rerankd.types import ICRConfig

    cfg = ICRConfig(layers=args.layers, max_words_per_passage=args.max_words)
    requests = _requests(args.candidates, args.limit, args.top_k, cfg)
    t0 = time.perf_counter()
    vllm = VLLMEngine.load(
        args.model, dtype=args.dtype, context_size=args.context_size, attention="only",
        attention_kv_cache_gib=args.kv_cache_gib, attention_max_models=2,
    )  # fmt: skip
    t_vllm = time.perf_counter() - t0
    batch = max(args.concurrency)
    hf = HFEngine.load(args.model, dtype=args.dtype, context_size=vllm.context_size, max_batch_size=batch)
    print(
        f"model={args.model} dtype={args.dtype} queries={len(requests)} top_k={args.top_k} "
        f"max_words={args.max_words} layers={cfg.layers} "
        f"context_size={vllm.context_size} (vllm attention engine started in {t_vllm:.0f}s)",
        flush=True,
    )

    async def go() -> None:
        from rerankd.strategies import rerank

        engines = {"vllm": vllm, "hf": hf}
        for engine in engines.values():  # warm-up
            await _timed(engine, requests[:1], 1)
        alone: dict[str, list[Any]] = {name: [] for name in engines}
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        diffs: list[float] = []
        identical = 0
        for i, request in enumerate(requests):
            for name, engine in engines.items():
                t = time.perf_counter()
                alone[name].append(await rerank(request, engine))
                seconds[name].append(time.perf_counter() - t)
            rv, rh = alone["vllm"][-1], alone["hf"][-1]
            sv, sh = {d.docid: d.score for d in rv.ranking}, {d.docid: d.score for d in rh.ranking}
            diffs.append(max(abs(sv[k] - sh[k]) for k in sh))
            identical += rv.docids == rh.docids
            print(f".. query {i + 1}/{len(requests)}: vllm {seconds['vllm'][-1]:.1f}s hf {seconds['hf'][-1]:.1f}s, "
                  f"largest score difference {diffs[-1]:.3g}, same ranking {rv.docids == rh.docids}",
                  flush=True)  # fmt: skip

        worst = max(diffs)
        print(f"\nequality: largest per-passage score difference vllm vs hf {worst:.3g}; "
              f"rankings identical on {identical}/{len(requests)} queries", flush=True)  # fmt: skip

        subset = requests[: args.speed_limit]
        n = len(subset)
        walls = {(name, 1): sum(seconds[name][:n]) for name in engines}
        for c in args.concurrency:
            if c == 1:
                continue
            for name, engine in engines.items():
                results, walls[name, c] = await _timed(engine, subset, c)
                same = sum(a.docids == b.docids for a, b in zip(results, alone[name], strict=False))
                print(f".. {name} c={c}: {walls[name, c] / n:.2f} s/query, rankings as alone {same}/{n}", flush=True)
        print(f"\nspeed over {n} queries:\n{'engine':>6} {'concurrency':>11} {'s/query':>8} {'queries/s':>9}")
        for c in sorted({1, *args.concurrency}):
            for name in engines:
                wall = walls[name, c]
                print(f"{name:>6} {c:>11} {wall / n:>8.2f} {n / wall:>9.3f}")
            print(f"{'':>6} vllm/hf time at concurrency {c}: {walls['vllm', c] / walls['hf', c]:.2f}")
        await hf.aclose()

    try:
        asyncio.run(go())
    finally:
        vllm.close()


if __name__ == "__main__":
    main()
