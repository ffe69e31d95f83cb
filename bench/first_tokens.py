"""FIRST's identifier rule: ``after_bracket`` (the old rule) vs ``as_written`` (the new one),
side by side on the same windows in one process.

``after_bracket`` appends ``[`` to the prompt and reads each letter's token after it;
``as_written`` reads each identifier as the tokenizer writes it at the answer start (the merged
``[X`` token, or ``[`` then ``X``: one more step after ``[``).  See
``rerankd/strategies/first_tokens.py``.  For each query (one window of ``--top-k`` BM25
candidates, window = stride = top-k) both rules run in turn, alternating which goes first; the
two runs are then compared with rerankd's paired evaluation (per-query nDCG@10 delta, percentile
bootstrap CI, W/T/L), and the rankings themselves are compared.

    python bench/first_tokens.py                       # DL19, 43 queries x BM25 top 20
    python bench/first_tokens.py --limit 10 --max-words 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULES = ("after_bracket", "as_written")  # A = the old rule, B = the new one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "trec-dl-2019-passage-bm25top100")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--limit", type=int, default=None, help="first N queries (default: all)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=None, help="cut each passage to its first N words")
    ap.add_argument("--rel-level", type=int, default=2, help="minimum relevant grade (TREC DL: 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the two TREC runs in this folder")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from rerankd.engines.factory import load_engine
    from rerankd.eval import compare, score_run
    from rerankd.eval_report import summary_table
    from rerankd.formats.inputs import read_queries
    from rerankd.prompts import Passage, get_template
    from rerankd.strategies import rerank
    from rerankd.strategies.first import fit_first_prompt
    from rerankd.strategies.first_tokens import plan_identifiers
    from rerankd.types import FirstConfig, RerankRequest

    items = []
    for it in read_queries(args.data / "candidates.jsonl"):
        cands = it.candidates[: args.top_k]
        if args.max_words:
            cands = [c.model_copy(update={"text": " ".join(c.text.split()[: args.max_words])}) for c in cands]
        items.append((it.query, cands))
        if args.limit and len(items) >= args.limit:
            break
    k = args.top_k
    engine = load_engine("hf", args.model)
    tok = engine.tokenizer

    # Which identifiers the tokenizer merges with "[" after this prompt (what as_written reads).
    q0, c0 = items[0]
    passages = [Passage(text=c.text, title=c.title) for c in c0]
    _, prompt, _, _ = fit_first_prompt(get_template("first"), q0.text, passages, tok, engine.context_size)
    plan = plan_identifiers(tok, k, prompt[-256:], "as_written")
    merged = "".join(chr(65 + i) for i, t in enumerate(plan.start) if t is not None)
    split = "".join(chr(65 + i) for i, t in enumerate(plan.start) if t is None)

    configs = {rule: FirstConfig(window_size=k, stride=k, identifiers=rule) for rule in RULES}  # type: ignore[arg-type]
    rankings: dict[str, dict[str, list[str]]] = {rule: {} for rule in RULES}
    secs: dict[str, list[float]] = {rule: [] for rule in RULES}
    calls: dict[str, list[int]] = {rule: [] for rule in RULES}
    warnings: dict[str, int] = dict.fromkeys(RULES, 0)

    async def go() -> None:
        for rule in RULES:  # warm-up: the first call pays one-off costs
            await rerank(RerankRequest(query=q0, candidates=c0, strategy=configs[rule]), engine)
        for n, (q, cands) in enumerate(items, 1):
            for rule in RULES if n % 2 else RULES[::-1]:
                t0 = time.perf_counter()
                res = await rerank(RerankRequest(query=q, candidates=cands, strategy=configs[rule]), engine)
                secs[rule].append(time.perf_counter() - t0)
                calls[rule].append(res.usage.llm_calls)
                warnings[rule] += len(res.warnings)
                rankings[rule][str(q.qid)] = res.docids
            print(f"\r{n}/{len(items)} queries", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        await engine.aclose()

    t_all = time.perf_counter()
    asyncio.run(go())
    wall = time.perf_counter() - t_all

    out = args.out or Path(tempfile.mkdtemp(prefix="first-tokens-"))
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for rule in [*RULES, "bm25"]:
        paths[rule] = out / f"{rule}.trec"
        with paths[rule].open("w") as fh:
            for q, cands in items:
                ids = rankings[rule][str(q.qid)] if rule in rankings else [c.docid for c in cands]
                # rank-derived scores: the evaluation sorts by score, and softmax scores can tie at 6 decimals
                fh.writelines(f"{q.qid} Q0 {d} {r} {len(ids) - r + 1} {rule}\n" for r, d in enumerate(ids, 1))
    qrels = args.data / "qrels.txt"
    runs = {rule: score_run(paths[rule], qrels, rel_level=args.rel_level) for rule in paths}
    comparison = compare(runs["after_bracket"], runs["as_written"], "nDCG@10")
    qids = list(rankings["after_bracket"])
    same = sum(rankings["after_bracket"][q] == rankings["as_written"][q] for q in qids)
    same_top = sum(rankings["after_bracket"][q][0] == rankings["as_written"][q][0] for q in qids)

    words = f", passages cut to {args.max_words} words" if args.max_words else ""
    print(
        f"model={args.model} engine=hf torch_threads={args.threads} data={args.data.name} "
        f"queries={len(items)} window={k} (one window per query){words}"
    )
    print(f"as_written after this prompt: merged '[X' tokens for {merged or '-'}; '[' + letter for {split or '-'}")
    print(
        f"first stage (BM25) nDCG@10 {runs['bm25'].mean('nDCG@10'):.4f} on {len(runs['bm25'].queries)} judged queries"
    )
    for line in summary_table([runs["after_bracket"], runs["as_written"]], [comparison]):
        print(line)
    print(f"rankings identical {same}/{len(qids)}, changed {len(qids) - same}; same top passage {same_top}/{len(qids)}")
    print(f"{'rule':<15}{'s/query':>9}{'llm calls/query':>17}{'warnings':>10}")
    for rule in RULES:
        print(f"{rule:<15}{statistics.mean(secs[rule]):>9.2f}{statistics.mean(calls[rule]):>17.2f}{warnings[rule]:>10}")
    base = statistics.mean(secs["after_bracket"])
    print(f"as_written / after_bracket time: {statistics.mean(secs['as_written']) / base:.2f}x; wall {wall:.0f} s")


if __name__ == "__main__":
    main()
