"""Sliding-window listwise reranking (RankGPT, RankZephyr, RankVicuna).

Windows move back to front (last ``window_size`` candidates first, then ``stride``
towards the front), so strong passages bubble up to the top window.  Each window is
one generation of ``[i] > [j] > ...``, parsed totally by :mod:`.parsing`.
"""

from __future__ import annotations

import time

from rerankd.engines.base import Capability, Engine, require
from rerankd.prompts import Passage, fit_prompt, get_template
from rerankd.strategies.common import build_result, run_sync, window_spans
from rerankd.strategies.parsing import parse_permutation
from rerankd.types import FullRankingConfig, RerankRequest, RerankResult, SlidingWindowConfig, Usage


async def rank_window(
    engine: Engine,
    cfg: SlidingWindowConfig | FullRankingConfig,
    query: str,
    passages: list[Passage],
    usage: Usage,
    warnings: list[str],
    label: str,
) -> list[int]:
    """Rank one window by generation with ``cfg``'s prompt, parser and budget.

    Returns a permutation of ``range(len(passages))``.  The generation budget is
    ``cfg.max_output_tokens`` or, when ``None``, the tokens of a full permutation of the window
    (a model that writes one needs no more).
    """
    template = get_template(cfg.prompt)
    budget = cfg.max_output_tokens or template.output_budget(len(passages), engine.tokenizer)
    fitted = await run_sync(fit_prompt, template, query, passages, engine.tokenizer, engine.context_size, budget)
    if fitted.truncated:
        warnings.append(f"{label}: passages cut to fit the context")
    gen = (await engine.generate([fitted.messages], max_tokens=budget))[0]
    usage.add(gen.prompt_tokens, gen.completion_tokens, 1)
    parsed = parse_permutation(gen.text, len(passages), template.identifier, cfg.parser)
    warnings.extend(f"{label}: {r}" for r in parsed.repairs)
    return parsed.order


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    cfg = request.strategy
    assert isinstance(cfg, SlidingWindowConfig)
    require(engine, Capability.GENERATE, cfg.name)
    t0 = time.perf_counter()
    cands = request.candidates
    order = list(range(len(cands)))
    usage = Usage()
    warnings: list[str] = []
    for p in range(cfg.passes):
        for start, end in window_spans(len(order), cfg.window_size, cfg.stride):
            window = order[start:end]
            passages = [Passage(text=cands[i].text, title=cands[i].title) for i in window]
            label = f"pass {p + 1} window {start + 1}-{end}"
            local = await rank_window(engine, cfg, request.query.text, passages, usage, warnings, label)
            order[start:end] = [window[i] for i in local]
    return build_result(
        request,
        order,
        model=engine.model,
        usage=usage,
        timings={"rerank_s": time.perf_counter() - t0},
        warnings=warnings,
    )
