"""In-context reranking (ICR; Chen et al., ICLR 2025): score passages by attention.

All passages go into one prompt (:mod:`rerankd.prompts.icr`) followed by the query.  The
engine encodes the shared context once and runs two suffixes over its KV cache: the real
query and the content-free query ``"N/A"``.  For each context token it reports the
attention the suffix tokens pay to it (summed over layers and heads, averaged over the
suffix tokens, as OSU's ``score_documents``).  A passage's tokens are the context tokens
overlapping its character span; per calibration mode its score is

* ``none``: the sum of its token attentions (OSU ``query_last``);
* ``na``: the sum of (query - N/A) token attentions (OSU ``NA_calibration_no_agg`` scores
  documents this way, though with only the last query token);
* ``masked_na`` (OSU ``masked_NA_calibration``, the paper's ICR): the same, over the tokens
  whose calibrated attention exceeds ``mean - 2 * std`` of the passage's calibrated
  attentions (sample std).  This drops the outlier tokens the N/A query attends far more
  than the real one does (e.g. attention sinks such as the ``[i]`` marker or punctuation).

``layers=START:END`` sums the attention of layers ``START <= l < END`` only and lets the engine
stop its forward passes after layer ``END - 1`` (Selective-ICR; docs/strategies.md has the
window we recommend).

Passages are ranked by score, ties by first-stage rank.  ``doc_order="reversed"`` (the
default) puts the best first-stage passage last, nearest the query, as OSU's BEIR runs
(``--reverse_doc_order``); ``"first_stage"`` lists them in first-stage order.  Which is better
depends on the model (``bench/icr_ablation.py``; docs/strategies.md).

Prompts over ``engine.context_size`` are scored in chunks; no passage is dropped.  The
candidates are dealt round-robin in first-stage order into the fewest chunks that fit, so
chunks have about the same size and the same mix of strong and weak candidates; each chunk
is calibrated by its own N/A pass, so its scores are attention *gains* over the same
content-free baseline.  Attention to a token dilutes with context length, so when chunked
each chunk's scores are multiplied by ``its context tokens / mean context tokens of the
chunks`` (a factor of 1 for a single prompt, which therefore keeps the paper's raw scale).
Chunk scores are still only approximately comparable: a warning says so.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np

from rerankd.engines.base import Capability, Engine, require
from rerankd.prompts.icr import IcrPrompt, build_icr_prompt, format_passage
from rerankd.strategies.common import build_result, run_sync
from rerankd.types import (
    ContextAttention,
    ICRConfig,
    RerankInputError,
    RerankRequest,
    RerankResult,
    Tokenizer,
    Usage,
)

logger = logging.getLogger(__name__)

Calibration = Literal["masked_na", "na", "none"]


def passage_token_indices(
    token_offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Indices of the context tokens overlapping each ``[start, end)`` character span."""
    if not token_offsets:
        return [np.zeros(0, dtype=np.int64) for _ in spans]
    offsets = np.asarray(token_offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    return [np.flatnonzero((starts < e) & (ends > s)) for s, e in spans]


def passage_score(query_att: np.ndarray, na_att: np.ndarray | None, calibration: Calibration) -> float:
    """ICR score of one passage from its tokens' attentions to the query and N/A suffixes."""
    if calibration == "none" or na_att is None:
        return float(query_att.sum())
    calibrated = query_att - na_att
    if calibration == "masked_na" and calibrated.size >= 2:
        std = float(calibrated.std(ddof=1))
        if std > 0:  # OSU's strict ``>`` would drop every token of a constant passage
            calibrated = calibrated[calibrated > calibrated.mean() - 2 * std]
    return float(calibrated.sum())


def score_passages(
    attention: ContextAttention, spans: Sequence[tuple[int, int]], calibration: Calibration
) -> tuple[list[float], list[int]]:
    """Scores of the passages at ``spans``, and the indices of passages with no token."""
    query_att = np.asarray(attention.scores[0], dtype=np.float64)
    na_att = None
    if calibration != "none":
        if len(attention.scores) < 2:
            raise ValueError(f"calibration {calibration!r} needs the N/A suffix's attention")
        na_att = np.asarray(attention.scores[1], dtype=np.float64)
    for att in (query_att, na_att):
        if att is None:
            continue
        if att.size != len(attention.token_offsets):
            raise ValueError(f"engine returned {att.size} scores for {len(attention.token_offsets)} context tokens")
        if not np.isfinite(att).all():
            raise ValueError("engine returned non-finite attention scores")
    scores: list[float] = []
    empty: list[int] = []
    for i, idx in enumerate(passage_token_indices(attention.token_offsets, spans)):
        if idx.size == 0:
            empty.append(i)
            scores.append(0.0)
            continue
        scores.append(passage_score(query_att[idx], None if na_att is None else na_att[idx], calibration))
    return scores, empty


def _prompt_tokens(prompt: IcrPrompt, tokenizer: Tokenizer, calibrated: bool) -> int:
    n = tokenizer.count_chat(prompt.messages)
    return max(n, tokenizer.count_chat(prompt.na_messages)) if calibrated else n


def _in_prompt_order(indices: list[int], doc_order: str) -> list[int]:
    """Candidate indices (first-stage order) arranged as they appear in the prompt."""
    ordered = sorted(indices)
    return ordered[::-1] if doc_order == "reversed" else ordered


def plan_chunks(
    request: RerankRequest, tokenizer: Tokenizer, context_size: int
) -> tuple[list[tuple[list[int], IcrPrompt]], int]:
    """Prompt-ordered candidate chunks whose prompts fit ``context_size``, with their prompts,
    and the token count of the single prompt over all candidates."""
    cfg = request.strategy
    assert isinstance(cfg, ICRConfig)
    calibrated = cfg.calibration != "none"
    cands = request.candidates
    n = len(cands)

    def build(indices: list[int]) -> IcrPrompt:
        return build_icr_prompt(
            request.query.text,
            [(cands[i].title, cands[i].text) for i in indices],
            tokenizer,
            max_words_per_passage=cfg.max_words_per_passage,
        )

    whole = _in_prompt_order(list(range(n)), cfg.doc_order)
    prompt = build(whole)
    total = _prompt_tokens(prompt, tokenizer, calibrated)
    if total <= context_size:
        return [(whole, prompt)], total

    # Estimate how many chunks are needed from per-passage token counts, then grow until all fit.
    sizes = [
        len(tokenizer.encode(f"[{i + 1}] {format_passage(c.title, c.text, cfg.max_words_per_passage)}\n\n"))
        for i, c in enumerate(cands)
    ]
    worst = max(range(n), key=lambda i: sizes[i])
    if _prompt_tokens(build([worst]), tokenizer, calibrated) > context_size:
        raise ValueError(
            f"the ICR prompt for candidate {cands[worst].docid!r} alone exceeds the engine's context of "
            f"{context_size} tokens; lower max_words_per_passage (now {cfg.max_words_per_passage})"
        )
    overhead = max(total - sum(sizes), 0)
    room = context_size - overhead
    k = max(2, math.ceil(sum(sizes) / room)) if room > 0 else 2
    while k <= n:
        groups = [_in_prompt_order(list(range(j, n, k)), cfg.doc_order) for j in range(k)]
        chunks = [(g, build(g)) for g in groups]
        if all(_prompt_tokens(p, tokenizer, calibrated) <= context_size for _, p in chunks):
            return chunks, total
        k += 1
    raise ValueError(f"no split of the {n} candidates fits the engine's context of {context_size} tokens")


def check_layers(cfg: ICRConfig, engine: Engine) -> None:
    """Refuse a layer window that ends past the engine's layers (when the engine tells them)."""
    n_layers = getattr(engine, "num_layers", None)
    if cfg.layers is not None and isinstance(n_layers, int) and n_layers > 0 and cfg.layers[1] > n_layers:
        start, end = cfg.layers
        raise RerankInputError(
            f"layers {start}:{end} ends past the {n_layers} layers of {engine.model}; END must be <= {n_layers}"
        )


async def rerank(request: RerankRequest, engine: Engine) -> RerankResult:
    """Rerank ``request.candidates`` by ICR attention scores (see the module docstring)."""
    cfg = request.strategy
    if not isinstance(cfg, ICRConfig):
        raise TypeError(f"icr.rerank needs an ICRConfig, got {type(cfg).__name__}")
    require(engine, Capability.ATTENTION, cfg.name)
    check_layers(cfg, engine)
    t0 = time.perf_counter()
    chunks, total_tokens = await run_sync(plan_chunks, request, engine.tokenizer, engine.context_size)
    t_prompt = time.perf_counter() - t0

    n = len(request.candidates)
    usage = Usage()
    warnings: list[str] = []
    chunk_scores: list[list[float]] = []
    chunk_tokens: list[int] = []
    for indices, prompt in chunks:
        suffixes = [prompt.suffix] if cfg.calibration == "none" else [prompt.suffix, prompt.na_suffix]
        attention = await engine.query_attention(prompt.context, suffixes, layers=cfg.layers)
        usage.add(prompt_tokens=attention.prompt_tokens, llm_calls=1 + len(suffixes))
        scores, empty = await run_sync(score_passages, attention, prompt.doc_char_spans, cfg.calibration)
        for j in empty:
            warnings.append(f"candidate {request.candidates[indices[j]].docid!r} has no context token; scored 0")
        chunk_scores.append(scores)
        chunk_tokens.append(len(attention.token_offsets))

    final = [0.0] * n
    mean_tokens = sum(chunk_tokens) / len(chunk_tokens)
    for (indices, _), scores, tokens in zip(chunks, chunk_scores, chunk_tokens, strict=True):
        factor = tokens / mean_tokens if len(chunks) > 1 and mean_tokens > 0 else 1.0
        for i, s in zip(indices, scores, strict=True):
            final[i] = s * factor
    if len(chunks) > 1:
        msg = (
            f"ICR prompt over all {n} candidates needs {total_tokens} tokens, more than the engine's "
            f"context of {engine.context_size}; scored in {len(chunks)} chunks of "
            f"{min(len(c) for c, _ in chunks)}-{max(len(c) for c, _ in chunks)} candidates, "
            + ("each calibrated by its own N/A pass; " if cfg.calibration != "none" else "")
            + "scores across chunks are only approximately comparable"
        )
        logger.warning(msg)
        warnings.append(msg)

    order = sorted(range(n), key=lambda i: (-final[i], i))
    total_s = time.perf_counter() - t0
    return build_result(
        request,
        order,
        model=engine.model,
        scores=final,
        usage=usage,
        timings={"prompt_s": t_prompt, "attention_s": total_s - t_prompt, "rerank_s": total_s},
        warnings=warnings,
    )
