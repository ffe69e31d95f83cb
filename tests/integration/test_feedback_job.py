"""A rerank job with embeddings, through the real API, Redis and a Celery worker (tiny model):
the result carries the query vector refit to the reranker's scores."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from rerankd.client import Client
from rerankd.feedback.refit import refit_query
from tests.support.stack import Service

pytestmark = pytest.mark.integration


def test_job_returns_the_refit_query_vector(service: Service) -> None:
    rng = np.random.default_rng(1)
    n, dim = 8, 16
    cand_vecs = rng.normal(size=(n, dim))
    cand_vecs /= np.linalg.norm(cand_vecs, axis=1, keepdims=True)
    q = cand_vecs[0] + 0.1 * rng.normal(size=dim)
    body = {
        "query": {"text": "capital of France"},
        "candidates": [{"docid": f"d{i}", "text": f"passage {i} about things"} for i in range(n)],
        "top_n": 3,
        "feedback": {"query_vector": q.tolist(), "candidate_vectors": cand_vecs.tolist(), "steps": 30},
    }
    with Client(service.url, api_key="key-alice") as c:
        job = c.wait(c.submit_job(body, model="tiny")["id"], timeout=120)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert len(result["ranking"]) == 3
    fb = result["feedback"]
    assert len(fb["query_vector"]) == dim
    assert fb["shift"] == pytest.approx(np.linalg.norm(np.array(fb["query_vector"]) - q), rel=1e-6)
    assert -1.0 <= fb["cosine"] <= 1.0
    # The same job without top_n (greedy decoding: the same ranking) exposes every score: the
    # worker's vector is refit_query over all 8 candidates, also for the top_n=3 job.
    body_all = {**body, "top_n": None}
    with Client(service.url, api_key="key-alice") as c:
        full = c.wait(c.submit_job(body_all, model="tiny")["id"], timeout=120)["result"]
    scores = {d["docid"]: d["score"] for d in full["ranking"]}
    expected = refit_query(q, cand_vecs, [scores[f"d{i}"] for i in range(n)], steps=30)
    assert full["feedback"]["query_vector"] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-9)
    assert fb["query_vector"] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-9)


def test_mismatched_embeddings_are_a_clear_422(service: Service) -> None:
    body = {
        "query": {"text": "q"},
        "candidates": [{"docid": "a", "text": "x"}, {"docid": "b", "text": "y"}],
        "feedback": {"query_vector": [1.0, 0.0], "candidate_vectors": [[1.0, 0.0]]},
    }
    resp = httpx.post(f"{service.url}/v1/jobs", json={**body, "model": "tiny"}, headers=service.headers())
    assert resp.status_code == 422
    assert "feedback.candidate_vectors has 1 vectors for 2 candidates" in resp.json()["message"]
