"""FIRST (Reddy et al., 2024): rank a window by the logits of the first identifier.

The window prompt uses alphabetic identifiers ``[A]``, ``[B]``, ...; the model's chat
template is applied with the generation prompt and ``[`` appended, then a single
forward pass gives the next-token distribution.  The window's passages are ordered
by the log-probability of their identifier letter.

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
from rerankd.prompts import Passage, fit_prompt, get_template, identifier
from rerankd.strategies.common import build_result, window_spans
from rerankd.types import FirstConfig, RerankRequest, RerankResult, Tokenizer, Usage


class IdentifierTokenError(ValueError):
    """An identifier letter is not a single token for the model's tokenizer."""


def identifier_token_ids(tokenizer: Tokenizer, count: int) -> list[int]:
    """Token ids of the letters ``A..`` (``count`` of them), each a single token."""
    ids: list[int] = []
    for i in range(count):
        letter = identifier(i, "alpha")
        toks = tokenizer.encode(letter)
        if len(toks) != 1:
            raise IdentifierTokenError(
                f"FIRST needs every identifier to be one token, but {letter!r} encodes to "
                f"{len(toks)} tokens {toks} with this tokenizer; use a model whose tokenizer "
                "has single-token capital letters"
            )
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise IdentifierTokenError(f"identifier letters share token ids: {ids}")
    return ids


def softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    es = [math.exp(x - m) for x in xs]
    s = sum(es)
    return [e / s for e in es]


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    cfg = request.strategy
    assert isinstance(cfg, FirstConfig)
    require(engine, Capability.LOGPROBS, cfg.name)
    t0 = time.perf_counter()
    template = get_template(cfg.prompt)
    token_ids = identifier_token_ids(engine.tokenizer, min(cfg.window_size, len(request.candidates)))
    cands = request.candidates
    n = len(cands)
    order = list(range(n))
    spans = window_spans(n, cfg.window_size, cfg.stride)
    scores = [0.0] * n
    usage = Usage()
    warnings: list[str] = []
    for k, (start, end) in enumerate(spans):
        window = order[start:end]
        passages = [Passage(text=cands[i].text, title=cands[i].title) for i in window]
        fitted = fit_prompt(template, request.query.text, passages, engine.tokenizer, engine.context_size, 1)
        if fitted.truncated:
            warnings.append(f"window {start + 1}-{end}: passages cut to fit the context")
        prompt = engine.tokenizer.render_chat(fitted.messages, add_generation_prompt=True) + "["
        logprobs = (await engine.next_token_logprobs([prompt], token_ids[: len(window)]))[0]
        usage.add(fitted.prompt_tokens + 1, 0, 1)
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
