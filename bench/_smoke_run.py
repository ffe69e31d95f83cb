"""The run behind ``bench/gpu_smoke.py``: per model, build, wrap in HFEngine, run the strategies."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import threading
import time
import traceback

import torch
import transformers
from _smoke_models import SPECS, TINY_SPECS, Spec, SyntheticQuery, build_model, build_tokenizer, synthetic_queries
from _smoke_models import weight_bytes as model_bytes
from _smoke_report import IcrMemory, Report, Row, fmt_bytes

from rerankd.engines.hf.engine import HFEngine
from rerankd.strategies import rerank
from rerankd.strategies.icr import plan_chunks
from rerankd.types import (
    Candidate,
    ChatMessage,
    FirstConfig,
    FullRankingConfig,
    ICRConfig,
    Query,
    RerankRequest,
    SlidingWindowConfig,
    StrategyConfig,
)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
WATCHDOG_GRACE_S = 20.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def strategy_config(name: str, n_passages: int, cap: int) -> StrategyConfig:
    """The issue's settings: windows of 20 with stride 10; generation capped at ``cap`` tokens."""
    if name == "sliding_window":
        return SlidingWindowConfig(window_size=20, stride=10, max_output_tokens=cap)
    if name == "full_ranking":
        return FullRankingConfig(max_candidates=max(100, n_passages), max_output_tokens=cap)
    if name == "first":
        return FirstConfig(window_size=20, stride=10)
    return ICRConfig()


def _request(q: SyntheticQuery, cfg: StrategyConfig) -> RerankRequest:
    cands = [Candidate(docid=f"{q.qid}-d{i}", text=t) for i, t in enumerate(q.passages)]
    return RerankRequest(query=Query(qid=q.qid, text=q.text), candidates=cands, strategy=cfg)


def _permutation_error(request: RerankRequest, docids: list[str]) -> str | None:
    want = [c.docid for c in request.candidates]
    if len(docids) != len(want) or len(set(docids)) != len(docids) or set(docids) != set(want):
        return f"{request.query.qid}: {len(docids)} ids ({len(set(docids))} distinct) for {len(want)} inputs"
    return None


def _icr_shape(engine: HFEngine, request: RerankRequest, mem: IcrMemory) -> None:
    """Context tokens and query-span tokens of the ICR prompt (its first chunk), outside any timing."""
    chunks, _ = plan_chunks(request, engine.tokenizer, engine.context_size)
    prompt = chunks[0][1]
    n = len(engine.hf_tokenizer.encode_with_offsets(prompt.context)[0])
    span = max(len(engine.tokenizer.encode(prompt.suffix)), len(engine.tokenizer.encode(prompt.na_suffix)))
    mem.context_tokens = max(mem.context_tokens, n)
    mem.span_tokens = max(mem.span_tokens, span)
    mem.chunks = len(chunks)


class Smoke:
    def __init__(self, args: argparse.Namespace, device: torch.device, t_start: float) -> None:
        self.args, self.device, self.t_start = args, device, t_start
        self.deadline = t_start + args.budget_s
        self.dtype = _DTYPES[args.dtype]
        name = "cpu"
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            name = f"{props.name}, {fmt_bytes(props.total_memory)}"
        self.report = Report(
            header=[
                f"device {device} ({name}), dtype {args.dtype}, torch {torch.__version__}, "
                f"transformers {transformers.__version__}",
                f"{args.queries} quer(y/ies) x {args.passages} passages x {args.words} words; generation capped at "
                f"{args.max_new_tokens} new tokens (max_output_tokens; random weights write junk); "
                f"budget {args.budget_s:.0f} s",
            ]
        )
        self.times: dict[str, float] = {}
        """Last seconds per query of each strategy (any model): the budget's predictions."""

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def fits(self, predicted_s: float) -> bool:
        if time.monotonic() + predicted_s <= self.deadline:
            return True
        self.report.budget_hit = True
        return False

    def print_report(self) -> int:
        code, _ = self.report.status()
        print("\n".join(self.report.lines(self.elapsed())), flush=True)
        return code

    def start_watchdog(self) -> threading.Timer:
        def fire() -> None:
            self.report.budget_hit = True
            self.report.notes.append(f"watchdog: still running at budget + {WATCHDOG_GRACE_S:.0f} s; stopped")
            self.print_report()
            os._exit(3)

        timer = threading.Timer(max(self.deadline + WATCHDOG_GRACE_S - time.monotonic(), 0.0), fire)
        timer.daemon = True
        timer.start()
        return timer

    def run(self) -> int:
        args = self.args
        specs = TINY_SPECS if args.tiny else SPECS
        queries = synthetic_queries(args.queries, args.passages, args.words)
        texts = [q.text for q in queries] + [p for q in queries for p in q.passages]
        print("\n".join(self.report.header), flush=True)
        timer = self.start_watchdog()
        last_block = 0.0
        for key in args.models:
            if not self.fits(last_block * 1.1):
                for s in args.strategies:
                    self.report.row(key, s).skipped += len(queries)
                continue
            t0 = time.monotonic()
            try:
                self.run_model(key, specs[key], queries, texts)
            except Exception as e:  # e.g. out of memory while building: report it, try the next model
                traceback.print_exc()
                for s in args.strategies:
                    self.report.row(key, s).failures.append(f"model build or engine: {type(e).__name__}: {e}")
            last_block = time.monotonic() - t0
        timer.cancel()
        return self.print_report()

    def run_model(self, key: str, spec: Spec, queries: list[SyntheticQuery], texts: list[str]) -> None:
        t0 = time.perf_counter()
        tokenizer = build_tokenizer(texts, self.args.vocab, spec.chat)
        model = build_model(spec, tokenizer, self.device, self.dtype)
        _sync(self.device)
        built = time.perf_counter() - t0
        weights = model_bytes(model)
        print(
            f"[{self.elapsed():6.1f}s] {key}: {spec.label}, vocab {len(tokenizer)}, {fmt_bytes(weights)} of weights "
            f"built on {self.device} in {built:.1f} s",
            flush=True,
        )
        engine = HFEngine(model, tokenizer, model=key, context_size=spec.context_size)
        mem = IcrMemory(spec, dtype_bytes=torch.empty((), dtype=self.dtype).element_size(), weights=weights)
        try:
            asyncio.run(self._strategies(key, engine, queries, mem))
        finally:
            del engine, model
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    async def _strategies(self, key: str, engine: HFEngine, queries: list[SyntheticQuery], mem: IcrMemory) -> None:
        try:
            # Warm-up (CUDA context, kernels, allocator): not timed.
            await engine.generate([[ChatMessage(role="user", content="warm up")]], max_tokens=2)
            for name in self.args.strategies:
                row = self.report.row(key, name)
                cfg = strategy_config(name, self.args.passages, self.args.max_new_tokens)
                for q in queries:
                    if not self.fits(self.times.get(name, 0.0)):
                        row.skipped += 1
                        continue
                    await self._one(key, name, engine, _request(q, cfg), row, mem)
        finally:
            await engine.aclose()

    async def _one(
        self, key: str, name: str, engine: HFEngine, request: RerankRequest, row: Row, mem: IcrMemory
    ) -> None:
        cuda = self.device.type == "cuda"
        if name == "icr":
            _icr_shape(engine, request, mem)
            self.report.icr[key] = mem
        _sync(self.device)
        resident = 0
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            resident = torch.cuda.memory_allocated(self.device)
        t0 = time.perf_counter()
        try:
            result = await rerank(request, engine)
        except Exception as e:  # a failing strategy is reported, and the run goes on
            row.failures.append(f"{request.query.qid}: {type(e).__name__}: {e}")
            traceback.print_exc()
            return
        _sync(self.device)
        dt = time.perf_counter() - t0
        if name == "icr" and cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
            if mem.peak is None or peak - resident > (mem.peak - mem.resident):
                mem.peak, mem.resident = peak, resident
        self.times[name] = dt
        row.seconds.append(dt)
        row.calls += result.usage.llm_calls
        row.prompt_tokens += result.usage.prompt_tokens
        row.completion_tokens += result.usage.completion_tokens
        row.warnings += len(result.warnings)
        error = _permutation_error(request, result.docids)
        if error is None:
            row.permutations_ok += 1
        else:
            row.failures.append(f"not a permutation: {error}")
        status = "permutation ok" if error is None else "NOT A PERMUTATION"
        print(f"[{self.elapsed():6.1f}s] {key} {name} {request.query.qid}: {dt:.2f} s, {status}", flush=True)


def run_smoke(args: argparse.Namespace, device: torch.device, t_start: float) -> int:
    """Run the smoke check and print its report; returns the exit status (see gpu_smoke.py)."""
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    return Smoke(args, device, t_start).run()
