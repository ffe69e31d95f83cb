"""``rerankd doctor`` as a newcomer runs it: a real process, the real Redis, vllm imported for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _doctor(test_redis: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_") or k == "RERANKD_CACHE_DIR"}
    env["RERANKD_REDIS_URL"] = test_redis
    return subprocess.run(
        [sys.executable, "-m", "rerankd", "doctor", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_doctor_passes_on_a_set_up_machine(test_redis: str) -> None:
    out = _doctor(test_redis, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["python"]["detail"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert checks["torch"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok" and "answers PING" in checks["redis"]["detail"]
    assert checks["model"]["status"] == "ok" and "smollm2-135m-instruct" in checks["model"]["detail"]
    assert checks["vllm"]["status"] in ("ok", "warn", "info")  # informational: never the exit code
    assert checks["gpu"]["status"] in ("ok", "info")
    assert all(c["required"] for c in checks.values() if c["name"] in ("python", "torch", "settings", "redis"))


def test_doctor_names_the_fix_and_fails_when_redis_is_down() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _doctor(f"redis://127.0.0.1:{port}/0", "--no-vllm")
    assert out.returncode == 1
    assert f"RERANKD_REDIS_URL=redis://127.0.0.1:{port}/0 does not answer" in out.stdout
    assert "fix: start Redis there, or unset RERANKD_REDIS_URL" in out.stdout
    assert "required checks (*): 4 of 5 pass" in out.stdout
