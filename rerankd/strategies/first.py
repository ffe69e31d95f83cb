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
from rerankd.prompts import FittedPrompt, Passage, PromptTemplate, fit_prompt, get_template, identifier
from rerankd.strategies.common import build_result, run_sync, window_spans
from rerankd.types import FirstConfig, RerankRequest, RerankResult, Tokenizer, Usage


class IdentifierTokenError(ValueError):
    """An identifier letter is not a single token for the model's tokenizer."""


OPENING = "["
"""Appended to the rendered prompt: the model's next token is the first identifier's letter."""

_TAIL_CHARS = 256
"""The letters' ids are read after the prompt's last characters (tokenisation is local)."""


def identifier_token_ids(tokenizer: Tokenizer, count: int, prompt: str = "") -> list[int]:
    """Token ids of the letters ``A..`` (``count`` of them) as the model emits them after
    ``prompt + "["``: each letter's id is what tokenising ``prompt + "[" + letter`` adds to the
    tokens of ``prompt + "["``.

    Not ``encode(letter)``: SentencePiece tokenizers with a dummy prefix (Llama-2, Mistral,
    Zephyr) encode a lone ``"A"`` as ``"▁A"``, a different token from the ``"A"`` that follows
    ``[``.  Only when the tokenizer merges ``"[" + letter`` into other tokens (so the model,
    given a prompt ending in the ``[`` token, writes the letter as a token of its own) is the
    letter's own single token used.
    """
    base = tokenizer.encode(prompt + OPENING)
    ids: list[int] = []
    for i in range(count):
        letter = identifier(i, "alpha")
        full = tokenizer.encode(prompt + OPENING + letter)
        if full[: len(base)] == base:
            added = full[len(base) :]
            what = f"adds {len(added)} tokens {added} after '['"
        else:
            added = tokenizer.encode(letter)
            what = f"encodes to {len(added)} tokens {added}"
        if len(added) != 1:
            raise IdentifierTokenError(
                f"FIRST needs every identifier to be one token, but {letter!r} {what} with this "
                "tokenizer; use a model whose tokenizer has single-token capital letters"
            )
        ids.append(added[0])
    if len(set(ids)) != len(ids):
        raise IdentifierTokenError(f"identifier letters share token ids: {ids}")
    return ids


def fit_first_prompt(
    template: PromptTemplate, query: str, passages: list[Passage], tokenizer: Tokenizer, context_size: int
) -> tuple[FittedPrompt, str, int]:
    """The window's prompt (chat template, generation prompt, ``[``) and its token count, fitted
    so that the prompt leaves room for the one generated token (at most ``context_size - 1``)."""
    reserve = 2  # "[" (usually one token) and the generated letter
    while True:
        fitted = fit_prompt(template, query, passages, tokenizer, context_size, reserve)
        prompt = tokenizer.render_chat(fitted.messages, add_generation_prompt=True) + OPENING
        tokens = len(tokenizer.encode(prompt))
        if tokens <= context_size - 1:
            return fitted, prompt, tokens
        reserve += tokens - (context_size - 1)


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
    cands = request.candidates
    n = len(cands)
    order = list(range(n))
    spans = window_spans(n, cfg.window_size, cfg.stride)
    scores = [0.0] * n
    usage = Usage()
    warnings: list[str] = []
    token_ids: list[int] = []
    for k, (start, end) in enumerate(spans):
        window = order[start:end]
        passages = [Passage(text=cands[i].text, title=cands[i].title) for i in window]
        fitted, prompt, prompt_tokens = await run_sync(
            fit_first_prompt, template, request.query.text, passages, engine.tokenizer, engine.context_size
        )
        if fitted.truncated:
            warnings.append(f"window {start + 1}-{end}: passages cut to fit the context")
        if not token_ids:  # every window's prompt ends alike: the ids are the same for all
            count = min(cfg.window_size, n)
            tail = prompt.removesuffix(OPENING)[-_TAIL_CHARS:]
            token_ids = identifier_token_ids(engine.tokenizer, count, tail)
        logprobs = (await engine.next_token_logprobs([prompt], token_ids[: len(window)]))[0]
        usage.add(prompt_tokens, 0, 1)
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
