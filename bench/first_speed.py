"""FIRST vs generation-based sliding window over the same windows, timed side by side.

For each query (one window of ``--top-k`` candidates, window = stride = top-k so both
strategies see exactly the same window), in the same process and in turn:

* ``first``: one forward pass, identifiers ranked by their first-token logits;
* ``sliding_window``: generation as the model does it (greedy, stops at EOS or at the
  permutation's token budget);
* ``sliding_window (full permutation)``: the same generation forced to emit the whole
  budget (``min_new_tokens = max_new_tokens``), i.e. the cost of a model that writes the
  complete ``[i] > [j] > ...`` for every window, as RankZephyr-style rerankers are trained to.
  Small untuned models often stop after a few identifiers (the parser then completes the
  order from the first stage), which makes their generation look cheap.

    python bench/first_speed.py --dataset dl19 --limit 5
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from quality import _items  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dataset", default="dl19", choices=("noveleval", "dl19"))
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args()

    from rerankd.engines.factory import load_engine
    from rerankd.strategies import rerank
    from rerankd.types import FirstConfig, RerankRequest, SlidingWindowConfig

    items = [(q, c[: args.top_k]) for q, c in _items(args.data, args.dataset, args.limit)]
    k = args.top_k
    engine = load_engine("hf", args.model)
    hf_model: Any = engine.hf_model  # type: ignore[attr-defined]
    plain_generate = hf_model.generate

    def full_length_generate(*a: Any, generation_config: Any, **kw: Any) -> Any:
        cfg = copy.copy(generation_config)
        cfg.min_new_tokens = cfg.max_new_tokens
        return plain_generate(*a, generation_config=cfg, **kw)

    runs: dict[str, list[float]] = {"first": [], "sliding_window": [], "sliding_window (full permutation)": []}
    tokens: dict[str, list[int]] = {name: [] for name in runs}

    async def go() -> None:
        first = FirstConfig(window_size=k, stride=k)
        sw = SlidingWindowConfig(window_size=k, stride=k)
        # Warm-up (first call pays one-off costs).
        q0, c0 = items[0]
        await rerank(RerankRequest(query=q0, candidates=c0, strategy=first), engine)
        for n, (q, cands) in enumerate(items, 1):
            for name, cfg, forced in (
                ("first", first, False),
                ("sliding_window", sw, False),
                ("sliding_window (full permutation)", sw, True),
            ):
                hf_model.generate = full_length_generate if forced else plain_generate
                t0 = time.perf_counter()
                res = await rerank(RerankRequest(query=q, candidates=cands, strategy=cfg), engine)
                runs[name].append(time.perf_counter() - t0)
                tokens[name].append(res.usage.completion_tokens)
            print(f"\r{n}/{len(items)} queries", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        await engine.aclose()

    asyncio.run(go())
    base = statistics.mean(runs["first"])
    print(f"model={args.model} dataset={args.dataset} queries={len(items)} window={k} (one window per query)")
    print(f"{'run':<36} {'s/query':>8} {'completion tok':>15} {'x FIRST':>8}")
    for name, secs in runs.items():
        mean = statistics.mean(secs)
        print(f"{name:<36} {mean:>8.2f} {statistics.mean(tokens[name]):>15.1f} {mean / base:>8.2f}")


if __name__ == "__main__":
    main()
