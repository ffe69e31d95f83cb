"""FIRST (Reddy et al., 2024): rank a window by the logits of the first identifier.

The window prompt uses alphabetic identifiers ``[A]``, ``[B]``, ...; the model's chat
template is applied with the generation prompt, and one ``next_token_logprobs`` call gives
each identifier's log-probability as the start of the answer, read by the rule of
``FirstConfig.identifiers`` (:mod:`rerankd.strategies.first_tokens`: the ``[X`` token the
tokenizer writes, or ``[`` appended and the letter read after it).  The window's passages
are ordered by those log-probabilities.

Scores: the softmax over the window's identifier logits, ``p``.  Across windows,
each passage's final position is fixed by exactly one window of the last pass (the
back ``stride`` positions of a window, or every position of the front window).
With ``W`` windows processed back to front as ``k = 0 .. W-1``, a passage fixed by
window ``k`` scores ``(k + p) / W``: front windows outrank back ones and, within a
window, ``p`` orders the passages, so the score is monotone with the final rank and
equals ``p`` when there is a single window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from rerankd.engines.base import Capability, Engine, require
from rerankd.prompts import FittedPrompt, Passage, PromptTemplate, fit_prompt, get_template, identifier
from rerankd.strategies.common import build_result, run_sync, window_spans
from rerankd.strategies.first_tokens import (
    OPENING,
    IdentifierTokenError,
    IdentifierTokens,
    identifier_token_ids,
    plan_identifiers,
)
from rerankd.types import FirstConfig, RerankRequest, RerankResult, Tokenizer, Usage

__all__ = ["IdentifierTokenError", "fit_first_prompt", "identifier_token_ids", "rerank"]

_TAIL_CHARS = 256
"""Identifier tokens are read after the prompt's last characters (tokenisation is local)."""


def fit_first_prompt(
    template: PromptTemplate, query: str, passages: list[Passage], tokenizer: Tokenizer, context_size: int
) -> tuple[FittedPrompt, str, int, int]:
    """The window's prompt up to the answer start (chat template with the generation prompt),
    fitted so that it leaves room for two tokens (``[`` and a letter): both it and the prompt
    with ``[`` appended have at most ``context_size - 1`` tokens.  Returns the fitted messages,
    the prompt, and the token counts of the prompt and of the prompt with ``[``."""
    reserve = 2  # "[" (usually one token) and the generated letter
    while True:
        fitted = fit_prompt(template, query, passages, tokenizer, context_size, reserve)
        prompt = tokenizer.render_chat(fitted.messages, add_generation_prompt=True)
        with_bracket = len(tokenizer.encode(prompt + OPENING))
        if with_bracket <= context_size - 1:
            return fitted, prompt, len(tokenizer.encode(prompt)), with_bracket
        reserve += with_bracket - (context_size - 1)


def softmax(xs: Sequence[float]) -> list[float]:
    """Softmax of log-probabilities; all ``-inf`` (every identifier impossible) gives uniform."""
    m = max(xs)
    if m == -math.inf:
        return [1.0 / len(xs)] * len(xs)
    es = [math.exp(x - m) for x in xs]
    s = sum(es)
    return [e / s for e in es]


def finite_logprobs(logprobs: Sequence[float]) -> tuple[list[float], list[int]]:
    """``logprobs`` with NaN and ``+inf`` (no log-probability: a broken forward pass or server
    answer) replaced by ``-inf``, so that they rank last and every score stays a number; and the
    positions replaced.  ``-inf`` itself is a log-probability (probability 0) and is kept."""
    bad = [i for i, x in enumerate(logprobs) if math.isnan(x) or x == math.inf]
    return [-math.inf if i in bad else float(x) for i, x in enumerate(logprobs)], bad


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    cfg = request.strategy
    assert isinstance(cfg, FirstConfig)
    require(engine, Capability.LOGPROBS, cfg.name)
    t0 = time.perf_counter()
    template = get_template(cfg.prompt)
    cands = request.candidates
    n = len(cands)
    order = list(range(n))
    spans = window_spans(n, cfg.window_size, cfg.stride)
    scores = [0.0] * n
    usage = Usage()
    warnings: list[str] = []
    tokens: IdentifierTokens | None = None
    for k, (start, end) in enumerate(spans):
        window = order[start:end]
        passages = [Passage(text=cands[i].text, title=cands[i].title) for i in window]
        fitted, prompt, start_tokens, bracket_tokens = await run_sync(
            fit_first_prompt, template, request.query.text, passages, engine.tokenizer, engine.context_size
        )
        if fitted.truncated:
            warnings.append(f"window {start + 1}-{end}: passages cut to fit the context")
        if tokens is None:  # every window's prompt ends alike: the tokens are the same for all
            count = min(cfg.window_size, n)
            tail = prompt[-_TAIL_CHARS:]
            tokens = await run_sync(plan_identifiers, engine.tokenizer, count, tail, cfg.identifiers)
            if tokens.note:
                warnings.append(tokens.note)
        prompts, token_ids = tokens.request(prompt, len(window))
        rows = await engine.next_token_logprobs(prompts, token_ids)
        logprobs, bad = finite_logprobs(tokens.combine(rows, len(window)))
        if bad:
            warnings.append(
                f"window {start + 1}-{end}: {engine.model} returned no log-probability (NaN or +inf) for "
                f"identifiers {', '.join(identifier(i, 'alpha') for i in bad)}; ranked last in the window"
            )
        for p in prompts:
            usage.add(start_tokens if p == prompt else bracket_tokens, 0, 1)
        local = sorted(range(len(window)), key=lambda i: (-logprobs[i], i))
        probs = softmax(logprobs)
        order[start:end] = [window[i] for i in local]
        fixed_from = 0 if start == 0 else end - cfg.stride
        for pos in range(max(start, fixed_from), end):
            local_idx = local[pos - start]
            scores[window[local_idx]] = (k + probs[local_idx]) / len(spans)
    return build_result(
        request,
        order,
        model=engine.model,
        scores=scores,
        usage=usage,
        timings={"rerank_s": time.perf_counter() - t0},
        warnings=warnings,
    )
