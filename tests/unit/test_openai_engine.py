"""The openai engine against a scripted local OpenAI-compatible HTTP server (stdlib, a thread).

``ScriptedServer`` lives in ``tests/support/openai_server.py`` (``test_retry.py`` uses it too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerankd.engines.base import Capability, CapabilityError, Engine, require
from rerankd.engines.factory import load_engine
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.openai.engine import TOPK_FLOOR_GAP, OpenAIEngine, OpenAISettings
from rerankd.prompts.tiktoken_tokenizer import TiktokenTokenizer
from rerankd.types import ChatMessage, FirstConfig, RerankRequest
from tests.support.openai_server import ScriptedServer, chat_reply, completion_reply, fast_engine, user

# --------------------------------------------------------------------------- the scripted server


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


# --------------------------------------------------------------------------- settings


def test_settings_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_OPENAI_BASE_URL", "http://example.invalid/v1")
    monkeypatch.setenv("RERANKD_OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("RERANKD_OPENAI_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("RERANKD_OPENAI_DEADLINE_S", "12.5")
    monkeypatch.setenv("RERANKD_OPENAI_SUPPORTS_COMPLETIONS_LOGPROBS", "false")
    s = OpenAISettings.from_env(max_attempts=2)
    assert s.base_url == "http://example.invalid/v1" and s.api_key == "sk-env"
    assert s.max_attempts == 2  # explicit beats env
    assert s.deadline_s == 12.5 and s.supports_completions_logprobs is False
    policy = s.retry_policy()
    assert policy.max_attempts == 2 and policy.deadline_s == 12.5

    monkeypatch.setenv("RERANKD_OPENAI_MAX_ATTEMPTS", "many")
    with pytest.raises(ValueError, match="RERANKD_OPENAI_MAX_ATTEMPTS='many' is not a valid int"):
        OpenAISettings.from_env()
    with pytest.raises(TypeError, match="unknown openai engine setting"):
        OpenAISettings.from_env(max_attempt=3)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        OpenAISettings.from_env(max_attempts=0)


def test_api_key_falls_back_to_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RERANKD_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert OpenAISettings.from_env().api_key == "sk-openai"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert OpenAISettings.from_env().api_key == "EMPTY"


def test_model_from_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_OPENAI_MODEL", "m")
    eng = OpenAIEngine.load(None, base_url=server.base_url, tokenizer="tiktoken:cl100k_base")
    assert eng.model == "m"
    monkeypatch.delenv("RERANKD_OPENAI_MODEL")
    with pytest.raises(ValueError, match="needs a model name"):
        OpenAIEngine.load(None, base_url=server.base_url)


def test_tokenizer_choice_is_an_explicit_setting(server: ScriptedServer, tiny_model_dir: Path) -> None:
    # a local folder as the model name: its own HF tokenizer by default
    eng = OpenAIEngine.load(str(tiny_model_dir), base_url=server.base_url)
    assert isinstance(eng.tokenizer, HFTokenizer)
    # any other name: o200k_base by default, whatever the name looks like
    for name in ("gpt-4o-mini", "meta-llama/Llama-3.1-8B-Instruct", "m"):
        eng = OpenAIEngine.load(name, base_url=server.base_url)
        assert isinstance(eng.tokenizer, TiktokenTokenizer) and eng.tokenizer.encoding_name == "o200k_base"
    # explicit settings win
    eng = OpenAIEngine.load("gpt-4o-mini", base_url=server.base_url, tokenizer="tiktoken:cl100k_base")
    assert isinstance(eng.tokenizer, TiktokenTokenizer) and eng.tokenizer.encoding_name == "cl100k_base"
    eng = OpenAIEngine.load("m", base_url=server.base_url, tokenizer=str(tiny_model_dir))
    assert isinstance(eng.tokenizer, HFTokenizer)


def test_context_size_from_server_settings_or_default(tiny_model_dir: Path) -> None:
    srv = ScriptedServer(max_model_len=3072)
    try:
        assert fast_engine(srv).context_size == 3072  # vLLM's /models max_model_len
        assert fast_engine(srv, context_size=1000).context_size == 1000
    finally:
        srv.close()
    srv = ScriptedServer(max_model_len=None)
    try:
        # no figure from the server: the HF model config, else the tiktoken default
        eng = OpenAIEngine.load("m", base_url=srv.base_url, tokenizer=str(tiny_model_dir))
        assert eng.context_size == 2048
        assert fast_engine(srv).context_size == 128_000
    finally:
        srv.close()


# --------------------------------------------------------------------------- generation


def test_generate_sends_greedy_chat_requests(server: ScriptedServer) -> None:
    eng = fast_engine(server, context_size=200)
    assert isinstance(eng, Engine) and eng.name == "openai"
    assert eng.capabilities == {Capability.GENERATE, Capability.LOGPROBS}
    prompts = [
        [ChatMessage(role="system", content="Be brief."), *user("rank [1] and [2]")],
        user("word " * 150),  # leaves less room than max_tokens
    ]
    gens = asyncio.run(eng.generate(prompts, max_tokens=64))
    assert [g.text for g in gens] == ["[2] > [1]", "[2] > [1]"]
    assert gens[0].prompt_tokens == 11 and gens[0].completion_tokens == 5  # the server's usage
    bodies = server.calls("/v1/chat/completions")
    assert len(bodies) == 2
    by_len = sorted(bodies, key=lambda b: len(b["messages"]))
    assert by_len[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "rank [1] and [2]"},
    ]
    assert all(b["temperature"] == 0 and b["model"] == "m" for b in bodies)
    long_prompt = by_len[0]
    room = 200 - eng.tokenizer.count_chat(prompts[1])
    assert long_prompt["max_tokens"] == min(64, room) < 64
    assert by_len[1]["max_tokens"] == 64


def test_generate_max_completion_tokens_and_limits(server: ScriptedServer) -> None:
    eng = fast_engine(server, max_tokens_field="max_completion_tokens", context_size=50)
    asyncio.run(eng.generate([user("hi")], max_tokens=7))
    body = server.calls("/v1/chat/completions")[-1]
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body
    with pytest.raises(ValueError, match="context size"):
        asyncio.run(eng.generate([user("word " * 100)], 4))
    with pytest.raises(ValueError, match="prefilled assistant"):
        asyncio.run(eng.generate([[*user("q"), ChatMessage(role="assistant", content="[")]], 4))
    with pytest.raises(ValueError, match="max_tokens"):
        asyncio.run(eng.generate([user("q")], 0))


def test_generate_without_usage_counts_itself(server: ScriptedServer) -> None:
    reply = chat_reply("[1] > [2]")
    del reply.body["usage"]
    server.script("/v1/chat/completions", reply)
    eng = fast_engine(server)
    [gen] = asyncio.run(eng.generate([user("q")], 8))
    assert gen.prompt_tokens == eng.tokenizer.count_chat(user("q"))
    assert gen.completion_tokens == len(eng.tokenizer.encode("[1] > [2]"))


def test_engine_works_across_event_loops_and_closes(server: ScriptedServer) -> None:
    eng = fast_engine(server)
    for _ in range(2):  # a fresh SDK client per event loop
        assert asyncio.run(eng.generate([user("q")], 4))[0].text == "[2] > [1]"

    async def close_then_use() -> None:
        await eng.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await eng.generate([user("q")], 4)

    asyncio.run(close_then_use())


def test_concurrent_requests_are_in_flight_together(server: ScriptedServer) -> None:
    slow = chat_reply()
    slow.delay_s = 0.3
    server.script("/v1/chat/completions", slow)
    eng = fast_engine(server, max_concurrent_requests=4)

    async def run() -> None:
        await asyncio.gather(*(eng.generate([user(f"q{i}")], 4) for i in range(8)))

    asyncio.run(run())
    assert len(server.calls("/v1/chat/completions")) == 8
    # requests overlap on the server, up to the configured limit and never beyond it
    assert server.max_in_flight == 4


# --------------------------------------------------------------------------- logprobs (FIRST)


def test_next_token_logprobs_from_completions(server: ScriptedServer, tiny_model_dir: Path) -> None:
    eng = fast_engine(server, tokenizer=str(tiny_model_dir), top_logprobs=5)
    tok = eng.tokenizer
    ids = [tok.encode(c)[0] for c in "ABCD"]
    top = {"B": -0.5, "A": -1.5, "x": -2.0, "C": -3.0, "y": -4.0}
    server.script("/v1/completions", completion_reply(top))
    prompt = tok.render_chat(user("Which letter?")) + "["
    [row] = asyncio.run(eng.next_token_logprobs([prompt], ids))
    assert row[:3] == [-1.5, -0.5, -3.0]
    assert row[3] == -4.0 - TOPK_FLOOR_GAP  # "D" is not in the top 5: below every returned value
    [body] = server.calls("/v1/completions")
    assert body["prompt"] == tok.encode(prompt)  # token ids: exactly the counted prompt
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["logprobs"] == 5


def test_logprobs_text_prompt_with_tiktoken(server: ScriptedServer) -> None:
    eng = fast_engine(server)
    server.script("/v1/completions", completion_reply({"A": -0.1, "B": -2.0}))
    ids = [eng.tokenizer.encode(c)[0] for c in "AB"]
    assert asyncio.run(eng.next_token_logprobs(["prompt ["], ids)) == [[-0.1, -2.0]]
    assert server.calls("/v1/completions")[0]["prompt"] == "prompt ["


def test_missing_completions_endpoint_turns_logprobs_off(server: ScriptedServer) -> None:
    eng = fast_engine(server)  # /v1/completions is not scripted: 404
    ids = [eng.tokenizer.encode("A")[0]]
    with pytest.raises(CapabilityError, match="HTTP 404") as info:
        asyncio.run(eng.next_token_logprobs(["p"], ids))
    assert "no route /v1/completions" in str(info.value)  # the server's own message
    assert Capability.LOGPROBS not in eng.capabilities
    n = len(server.requests)
    with pytest.raises(CapabilityError):
        asyncio.run(eng.next_token_logprobs(["p"], ids))
    assert len(server.requests) == n  # not asked again


def test_server_ignoring_logprobs_is_a_capability_error(server: ScriptedServer) -> None:
    reply = completion_reply({"A": -0.1})
    reply.body["choices"][0]["logprobs"] = None
    server.script("/v1/completions", reply)
    eng = fast_engine(server)
    with pytest.raises(CapabilityError, match="returned no logprobs"):
        asyncio.run(eng.next_token_logprobs(["p"], [eng.tokenizer.encode("A")[0]]))


def test_declared_without_logprobs_fails_first_clearly(server: ScriptedServer) -> None:
    eng = fast_engine(server, supports_completions_logprobs=False)
    assert eng.capabilities == {Capability.GENERATE}
    with pytest.raises(CapabilityError, match="'logprobs' capability"):
        require(eng, Capability.LOGPROBS, "first")
    with pytest.raises(CapabilityError, match="supports_completions_logprobs=False"):
        asyncio.run(eng.next_token_logprobs(["p"], [1]))
    from rerankd.strategies import rerank
    from rerankd.types import Candidate, Query

    req = RerankRequest(
        query=Query(text="q"),
        candidates=[Candidate(docid=str(i), text=f"passage {i}") for i in range(3)],
        strategy=FirstConfig(),
    )
    with pytest.raises(CapabilityError, match="first"):
        asyncio.run(rerank(req, eng))
    assert server.calls("/v1/completions") == []


def test_no_attention(server: ScriptedServer) -> None:
    eng = fast_engine(server)
    with pytest.raises(CapabilityError, match="hf"):
        asyncio.run(eng.query_attention("context", ["q"]))


def test_factory_builds_the_openai_engine(server: ScriptedServer) -> None:
    eng = load_engine("openai", "m", base_url=server.base_url, tokenizer="tiktoken:cl100k_base")
    assert isinstance(eng, OpenAIEngine) and eng.context_size == 2048
    with pytest.raises(ValueError, match="unknown engine kind"):
        load_engine("llamacpp", "m")


def test_sliding_window_through_the_openai_engine(server: ScriptedServer) -> None:
    from rerankd.strategies import rerank_many
    from rerankd.types import Candidate, Query

    server.script("/v1/chat/completions", chat_reply("[3] > [1] > [2]"))
    eng = fast_engine(server)
    reqs = [
        RerankRequest(
            query=Query(qid=f"q{k}", text="which passage?"),
            candidates=[Candidate(docid=f"d{i}", text=f"passage {i}") for i in range(3)],
        )
        for k in range(4)
    ]
    results = asyncio.run(rerank_many(reqs, eng, concurrency=4))
    assert [r.docids for r in results] == [["d2", "d0", "d1"]] * 4
    assert all(r.usage.llm_calls == 1 for r in results)
