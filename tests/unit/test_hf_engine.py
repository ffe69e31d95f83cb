"""The hf engine on a tiny random model (float32, so batched and unbatched greedy runs agree)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rerankd.engines.base import Capability, Engine
from rerankd.engines.factory import load_engine
from rerankd.engines.hf.engine import HFEngine, MicroBatcher
from rerankd.types import ChatMessage, Tokenizer


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


PROMPTS = [
    user("Rank [1] > [2]"),
    user("The capital of France is Paris. Which passage is relevant? [A] [B] [C] [D]"),
    [ChatMessage(role="system", content="Be brief."), user("Cats and dogs")[0]],
    user("Q"),
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[HFEngine]:
    eng = HFEngine.load(str(tiny_model_dir), dtype="float32", max_batch_size=8)
    yield eng
    asyncio.run(eng.aclose())


def test_capabilities_and_protocols(engine: HFEngine) -> None:
    assert engine.capabilities == {Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION}
    assert isinstance(engine, Engine)
    assert isinstance(engine.tokenizer, Tokenizer)
    assert engine.name == "hf"
    assert engine.context_size == 2048  # max_position_embeddings of the tiny config


def test_context_size_override(tiny_model_dir: Path) -> None:
    eng = HFEngine.load(str(tiny_model_dir), dtype="float32", context_size=64)
    assert eng.context_size == 64
    with pytest.raises(ValueError, match="context size"):
        asyncio.run(eng.generate([user("word " * 80)], 4))
    asyncio.run(eng.aclose())


def test_tokenizer_adapter(engine: HFEngine) -> None:
    tok = engine.tokenizer
    ids = tok.encode(" [3] > [1]")
    assert tok.decode(ids) == " [3] > [1]"
    assert engine.hf_tokenizer.hf.eos_token_id not in ids  # no special tokens added
    rendered = tok.render_chat(PROMPTS[0])
    assert rendered == "<|im_start|>user\nRank [1] > [2]<|im_end|>\n<|im_start|>assistant\n"
    assert not tok.render_chat(PROMPTS[0], add_generation_prompt=False).endswith("assistant\n")
    assert tok.count_chat(PROMPTS[0]) == len(tok.encode(rendered))
    for s in ["A", " A", "Z", " Z", "7", " 7", "[", " [", "]", ">", " >"]:
        assert len(tok.encode(s)) == 1, s


def test_generate_returns_text_and_token_counts(engine: HFEngine) -> None:
    [gen] = asyncio.run(engine.generate([PROMPTS[1]], max_tokens=6))
    assert isinstance(gen.text, str)
    assert gen.prompt_tokens == engine.tokenizer.count_chat(PROMPTS[1])
    assert 1 <= gen.completion_tokens <= 6
    assert "<|im_end|>" not in gen.text


def test_generate_rejects_bad_max_tokens(engine: HFEngine) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        asyncio.run(engine.generate([PROMPTS[0]], max_tokens=0))


def test_concurrent_callers_share_one_batch(engine: HFEngine) -> None:
    async def two_callers() -> None:
        await asyncio.gather(engine.generate([PROMPTS[0]], 4), engine.generate([PROMPTS[1]], 4))

    before = engine.stats.batches
    asyncio.run(two_callers())
    assert engine.stats.batches == before + 1
    assert engine.stats.recent_sizes[-1] == 2


def test_batches_are_capped_at_max_batch_size(tiny_model_dir: Path) -> None:
    eng = HFEngine.load(str(tiny_model_dir), dtype="float32", max_batch_size=2)

    async def run() -> None:
        await asyncio.gather(*(eng.generate([p], 3) for p in [*PROMPTS, PROMPTS[0]]))
        await eng.aclose()

    asyncio.run(run())
    assert list(eng.stats.recent_sizes) == [2, 2, 1]


def test_batched_greedy_equals_unbatched(engine: HFEngine) -> None:
    async def one_at_a_time() -> list:
        return [(await engine.generate([p], 8))[0] for p in PROMPTS]

    async def all_at_once() -> list:
        return await engine.generate(PROMPTS, 8)

    before = engine.stats.batches
    alone = asyncio.run(one_at_a_time())
    assert engine.stats.batches == before + len(PROMPTS)
    together = asyncio.run(all_at_once())
    assert engine.stats.recent_sizes[-1] == len(PROMPTS)
    assert len({g.prompt_tokens for g in alone}) > 1  # the batch really needed padding
    assert together == alone


def test_next_token_logprobs_matches_manual_forward(engine: HFEngine) -> None:
    texts = [engine.tokenizer.render_chat(p) + "[" for p in PROMPTS]
    wanted = [engine.tokenizer.encode(c)[0] for c in "ABCD"]
    got = asyncio.run(engine.next_token_logprobs(texts, wanted))
    assert engine.stats.recent_sizes[-1] == len(texts)
    for text, row in zip(texts, got, strict=True):
        ids = torch.tensor([engine.tokenizer.encode(text)])
        with torch.no_grad():
            logits = engine.hf_model(input_ids=ids).logits[0, -1]
        expected = torch.log_softmax(logits.float(), dim=-1)[wanted]
        assert row == pytest.approx(expected.tolist(), abs=1e-4)


def test_next_token_logprobs_rejects_unknown_ids(engine: HFEngine) -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        asyncio.run(engine.next_token_logprobs(["hello"], [10**6]))


def test_empty_and_cancelled_calls_leave_the_batcher_working(engine: HFEngine) -> None:
    async def run() -> list:
        assert await engine.generate([], 4) == []
        assert await engine.next_token_logprobs([], [1, 2]) == []
        doomed = asyncio.create_task(engine.generate([PROMPTS[1]], 4))
        await asyncio.sleep(0)
        doomed.cancel()
        return await engine.generate([PROMPTS[0]], 3)

    [gen] = asyncio.run(run())
    assert gen.completion_tokens >= 1


CONTEXTS = [
    "[1] Paris is the capital of France.\n\n[2] Cats sleep.\n\n",
    "[1] Rivers flow to the sea, and the sea is salty.\n\n",
    "[1] Python is a programming language.\n\n[2] Dogs are loyal companions.\n\n[3] Q\n\n",
]


def test_query_attention_offsets_and_sizes(engine: HFEngine) -> None:
    context = CONTEXTS[0]
    out = asyncio.run(engine.query_attention(context, ["Query: capital", "N/A"]))
    context_ids = engine.tokenizer.encode(context)
    assert len(out.token_offsets) == len(context_ids)
    assert "".join(context[s:e] for s, e in out.token_offsets) == context
    assert [len(row) for row in out.scores] == [len(context_ids)] * 2
    suffix_tokens = len(engine.tokenizer.encode("Query: capital")) + len(engine.tokenizer.encode("N/A"))
    assert out.prompt_tokens == len(context_ids) + suffix_tokens


def test_concurrent_query_attention_shares_passes_and_equals_one_at_a_time(engine: HFEngine) -> None:
    """Tolerance: 1e-5 absolute (float32; padding changes only the summation shapes)."""
    calls = [(c, [f"Query: {q}", "N/A"][: 1 + i % 2]) for i, c in enumerate(CONTEXTS) for q in ("sea", "cats")]

    async def alone() -> list:
        return [await engine.query_attention(c, s, layers=(0, 1)) for c, s in calls]

    async def together() -> list:
        return list(await asyncio.gather(*(engine.query_attention(c, s, layers=(0, 1)) for c, s in calls)))

    want = asyncio.run(alone())
    batches = engine.stats.batches
    got = asyncio.run(together())
    assert engine.stats.batches - batches == 1  # all six queries in one batch
    assert engine.stats.recent_sizes[-1] == len(calls)
    for g, w in zip(got, want, strict=True):
        assert g.token_offsets == w.token_offsets
        torch.testing.assert_close(torch.tensor(g.scores), torch.tensor(w.scores), atol=1e-5, rtol=0)


def test_query_attention_layer_window_validation(engine: HFEngine) -> None:
    assert engine.num_layers == 2
    with pytest.raises(ValueError, match=r"layers 0:3 ends past the model's 2 layers \(END <= 2\)"):
        asyncio.run(engine.query_attention(CONTEXTS[0], ["Q"], layers=(0, 3)))
    with pytest.raises(ValueError, match=r"layers must be START:END with 0 <= START < END, got 1:1"):
        asyncio.run(engine.query_attention(CONTEXTS[0], ["Q"], layers=(1, 1)))


def test_aclose_stops_the_engine(tiny_model_dir: Path) -> None:
    eng = HFEngine.load(str(tiny_model_dir), dtype="float32")

    async def run() -> None:
        await eng.generate([PROMPTS[0]], 2)
        await eng.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await eng.generate([PROMPTS[0]], 2)

    asyncio.run(run())


def test_factory(tiny_model_dir: Path) -> None:
    eng = load_engine("hf", str(tiny_model_dir), dtype="float32", max_batch_size=3)
    assert isinstance(eng, HFEngine) and eng.max_batch_size == 3
    asyncio.run(eng.aclose())
    with pytest.raises(ValueError, match="unknown engine kind"):
        load_engine("llamacpp", str(tiny_model_dir))


# --------------------------------------------------------------------------- MicroBatcher alone


def test_micro_batcher_groups_by_key_and_isolates_errors() -> None:
    from concurrent.futures import ThreadPoolExecutor

    seen: list[tuple[object, list[int]]] = []

    def run(key: object, payloads: list[int]) -> list[object]:
        seen.append((key, payloads))
        return [ValueError("odd") if p % 2 else p * 10 for p in payloads]

    async def main() -> list[object]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch_size=8)
            results: list[object] = await asyncio.gather(
                batcher.submit_many("x", [0, 2]),
                batcher.submit_many("y", [4]),
                batcher.submit_many("x", [1]),
                return_exceptions=True,
            )
            await batcher.aclose()
        return results

    a, b, c = asyncio.run(main())
    assert a == [0, 20] and b == [40]
    assert isinstance(c, ValueError)
    assert seen == [("x", [0, 2, 1]), ("y", [4])]


def test_device_auto_logs_its_choice_and_bad_devices_are_refused(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="rerankd.engines.hf"):
        eng = load_engine("hf", str(tiny_model_dir), device="auto", dtype="float32")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert eng.device.type == want  # type: ignore[attr-defined]
    assert f"device auto: {want}" in caplog.text
    asyncio.run(eng.aclose())
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        load_engine("hf", str(tiny_model_dir), device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1': CUDA is not available on this machine"):
            load_engine("hf", str(tiny_model_dir), device="cuda:1")


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    from rerankd.engines.hf.device import cpu_has_native_bf16

    assert not cpu_has_native_bf16(AVX2_ONLY)
    assert cpu_has_native_bf16(AVX512_BF16)
    assert cpu_has_native_bf16(ARM_BF16)
    assert not cpu_has_native_bf16("")


@pytest.mark.parametrize(("native", "want"), [(False, torch.float32), (True, torch.bfloat16)])
def test_dtype_auto_on_cpu_is_float32_unless_bf16_is_native(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, native: bool, want: torch.dtype
) -> None:
    # Emulated bfloat16 made a 0.5B model's ICR pass 5x slower than float32 on an AVX2-only CPU.
    from rerankd.engines.hf import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    assert device.resolve_dtype("auto", torch.device("cpu")) is want
    assert device.resolve_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16  # explicit wins
    eng = load_engine("hf", str(tiny_model_dir), device="cpu")
    assert next(eng.hf_model.parameters()).dtype is want  # type: ignore[attr-defined]
    asyncio.run(eng.aclose())
