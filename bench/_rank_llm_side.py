"""The rank_llm side of bench/throughput.py; runs in rank_llm's own virtualenv (Python >= 3.12).

It imports rank_llm (``rank-llm[openai]==0.26.0``), never rerankd.  Two commands, JSON in and out:

``render``  stdin ``{"query", "candidates": [{"docid", "text", "title"?}], "rank_start", "rank_end"}``;
            stdout the chat messages rank_llm's ``SafeOpenai`` sends for that window with the
            rank_zephyr template (to check that rerankd renders the same prompt).
``rerank``  reads ``--input`` (``[{"qid", "query", "candidates": [...]}]``), reranks the first
            ``--top-k`` candidates of every query with ``SafeOpenai`` (sliding window, Responses
            API of the server at ``--base-url``), ``--batch-size`` queries at once (rank_llm's own
            thread pool), and writes ``{"wall_s", "results": [{"qid", "docids", "calls",
            "prompt_tokens", "completion_tokens", "windows": [{"messages", "response",
            "output_tokens"}]}]}`` to ``--output``.  ``wall_s`` covers ``rerank_batch`` only (not
            Python start-up or imports).
``parse``   stdin ``[{"text", "n"}]``; stdout, for each, the 0-based order rank_llm's
            ``receive_permutation`` makes of ``text`` over a window of ``n`` passages
            (``--alpha``: alphabetic identifiers, as with rank_llm's ``use_alpha``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _template_path() -> str:
    import rank_llm.rerank.prompt_templates as templates

    return str(Path(templates.__file__).parent / "rank_zephyr_template.yaml")


def _reranker(args: argparse.Namespace) -> Any:
    from rank_llm.rerank.listwise.rank_gpt import SafeOpenai

    return SafeOpenai(
        model=args.model,
        context_size=args.context_size,
        prompt_template_path=_template_path(),
        window_size=args.window_size,
        stride=args.stride,
        batch_size=args.batch_size,
        keys="EMPTY",
        base_url=args.base_url,
    )


def _request(item: dict[str, Any], top_k: int | None) -> Any:
    from rank_llm.data import Candidate, Query, Request

    cands = item["candidates"][:top_k] if top_k else item["candidates"]
    return Request(
        query=Query(text=item["query"], qid=item["qid"]),
        candidates=[
            Candidate(
                docid=c["docid"],
                score=float(c.get("score") or 0.0),
                doc={"text": c["text"], **({"title": c["title"]} if c.get("title") else {})},
            )
            for c in cands
        ],
    )


def render(args: argparse.Namespace) -> None:
    from rank_llm.data import Result

    data = json.load(sys.stdin)
    args.model, args.context_size, args.batch_size = "render-only", 1_000_000, 1
    with contextlib.redirect_stdout(sys.stderr):  # rank_llm prints progress to stdout
        reranker = _reranker(args)
        request = _request({"qid": "q", **data}, None)
        result = Result(query=request.query, candidates=request.candidates, invocations_history=[])
        messages, _ = reranker.create_prompt(result, data["rank_start"], data["rank_end"])
    json.dump(messages, sys.stdout)


def parse(args: argparse.Namespace) -> None:
    from rank_llm.data import Candidate, Query, Result

    data = json.load(sys.stdin)
    args.model, args.context_size, args.batch_size = "parse-only", 1_000_000, 1
    with contextlib.redirect_stdout(sys.stderr):
        reranker = _reranker(args)
        reranker._use_alpha = args.alpha  # SafeOpenai takes no use_alpha argument
        orders = []
        for item in data:
            n = int(item["n"])
            cands = [Candidate(docid=str(i), score=0.0, doc={"text": ""}) for i in range(n)]
            result = Result(query=Query(text="", qid="q"), candidates=cands, invocations_history=[])
            result = reranker.receive_permutation(result, item["text"], 0, n)
            orders.append([int(c.docid) for c in result.candidates])
    json.dump(orders, sys.stdout)


def rerank(args: argparse.Namespace) -> None:
    items = json.loads(Path(args.input).read_text())
    requests = [_request(it, args.top_k) for it in items]
    reranker = _reranker(args)
    rank_end = max(len(r.candidates) for r in requests)
    t0 = time.perf_counter()
    results = reranker.rerank_batch(requests, rank_start=0, rank_end=rank_end, populate_invocations_history=True)
    wall = time.perf_counter() - t0
    out = {
        "wall_s": wall,
        "results": [
            {
                "qid": str(res.query.qid),
                "docids": [str(c.docid) for c in res.candidates],
                "calls": len(res.invocations_history or []),
                "prompt_tokens": sum(int(i.input_token_count or 0) for i in res.invocations_history or []),
                "completion_tokens": sum(int(i.output_token_count or 0) for i in res.invocations_history or []),
                "windows": [
                    {"messages": i.prompt, "response": i.response, "output_tokens": int(i.output_token_count or 0)}
                    for i in res.invocations_history or []
                ],
            }
            for res in results
        ],
    }
    Path(args.output).write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "rerank", "parse"):
        p = sub.add_parser(name)
        p.add_argument("--window-size", type=int, default=20)
        p.add_argument("--stride", type=int, default=10)
        if name == "rerank":
            p.add_argument("--input", required=True)
            p.add_argument("--output", required=True)
            p.add_argument("--base-url", required=True)
            p.add_argument("--model", required=True)
            p.add_argument("--context-size", type=int, required=True)
            p.add_argument("--batch-size", type=int, default=1)
            p.add_argument("--top-k", type=int, default=None)
        if name == "parse":
            p.add_argument("--alpha", action="store_true")
    args = parser.parse_args()
    if args.command == "render":
        args.base_url = None
        render(args)
    elif args.command == "parse":
        args.base_url = None
        parse(args)
    else:
        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
        rerank(args)


if __name__ == "__main__":
    main()
