"""API checks that need no worker: limits, auth, model names, Cohere shape, Redis down -> 503.

The app is pointed at a Redis port where nothing listens: every check below must answer
before the job store is touched, and the store's absence must give 503, never 500.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rerankd.api import cohere
from rerankd.api.app import create_app
from rerankd.config import Settings
from rerankd.types import RankedDoc, RerankResult


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": f"redis://127.0.0.1:{_closed_port()}/0",
        "redis_timeout_s": 0.5,
        "max_documents": 5,
        "max_document_chars": 50,
        "max_query_chars": 20,
        "max_body_bytes": 4096,
        "max_batch_lines": 2,
        "job_deadline_s": 60,
        "aliases": {"fast": {"model": "m2", "strategy": {"name": "first"}}},
    }
    base.update(kw)
    return Settings(**base)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(_settings()), client=("127.0.0.1", 5555)) as c:
        yield c


def _doc_body(**kw: Any) -> dict[str, Any]:
    return {"model": "rerankd", "query": "capital of france", "documents": ["a", "b"], **kw}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            _doc_body(documents=["x"] * 6),
            413,
            "documents: 6 documents exceed the limit of 5 (RERANKD_MAX_DOCUMENTS)",
        ),
        (
            _doc_body(documents=["ok", "y" * 51]),
            422,
            "documents[1]: 51 characters exceed the limit of 50 (RERANKD_MAX_DOCUMENT_CHARS)",
        ),
        (
            _doc_body(query="q" * 21),
            422,
            "query: 21 characters exceed the limit of 20 (RERANKD_MAX_QUERY_CHARS)",
        ),
        (
            _doc_body(model="nope"),
            404,
            "unknown model 'nope'; known: fast, m2, rerankd, smollm2-135m-instruct",
        ),
        (_doc_body(documents=[{"title": "no text"}]), 422, "documents[0]: an object document needs a 'text'"),
        ({"query": "q"}, 422, "documents: Field required"),
        (_doc_body(relevant_spans=True), 422, ""),
    ],
)
def test_rerank_limits_and_validation(client: TestClient, body: dict[str, Any], status: int, message: str) -> None:
    for path in ("/v1/rerank", "/v2/rerank"):
        resp = client.post(path, json=body)
        assert resp.status_code == status, resp.text
        assert resp.json()["message"].startswith(message)
        if "relevant_spans" in body:
            assert "relevant_spans is not supported" in resp.json()["message"]


def test_body_size_limit(client: TestClient) -> None:
    body = json.dumps(_doc_body(documents=["z" * 40] * 200)).encode()
    resp = client.post("/v2/rerank", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["message"] == f"body: {len(body)} bytes exceed the limit of 4096 (RERANKD_MAX_BODY_BYTES)"


def test_job_and_batch_validation_before_the_store(client: TestClient) -> None:
    job = {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}
    resp = client.post("/v1/jobs", json={**job, "deadline_s": 61})
    assert resp.status_code == 422
    assert resp.json()["message"] == "deadline_s: 61 seconds exceed the limit of 60 (RERANKD_JOB_DEADLINE_S)"
    resp = client.post("/v1/jobs", json={**job, "callback_url": "http://127.0.0.1:1/hook"})
    assert resp.status_code == 422 and "RERANKD_WEBHOOK_SECRET" in resp.json()["message"]
    resp = client.post("/v1/jobs", json={**job, "callback_url": "ftp://x"})
    assert resp.status_code == 422 and "http(s) URL" in resp.json()["message"]
    resp = client.post("/v1/jobs", json={**job, "candidates": [{"docid": "a", "text": "t" * 51}]})
    assert resp.status_code == 422 and "RERANKD_MAX_DOCUMENT_CHARS" in resp.json()["message"]

    line = json.dumps({"custom_id": "c1", "body": job})
    resp = client.post("/v1/batches", content="\n".join([line] * 3))
    assert resp.status_code == 413
    assert resp.json()["message"] == "batch: 3 lines exceed the limit of 2 (RERANKD_MAX_BATCH_LINES)"
    resp = client.post("/v1/batches", content=line + "\n" + line)
    assert resp.status_code == 422 and resp.json()["message"] == "line 2: custom_id 'c1' is duplicated"
    resp = client.post("/v1/batches", content=line + "\n{not json")
    assert resp.status_code == 422 and resp.json()["message"].startswith("line 2: ")
    bad = json.dumps({"custom_id": "c2", "body": {**job, "candidates": []}})
    resp = client.post("/v1/batches", content=line + "\n" + bad)
    assert resp.status_code == 422 and resp.json()["message"].startswith("line 2: candidates")


def test_redis_unavailable_answers_503_not_500(client: TestClient) -> None:
    job = {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]}
    for method, path, body in [
        ("POST", "/v2/rerank", _doc_body()),
        ("POST", "/v1/rerank", _doc_body()),
        ("POST", "/v1/jobs", job),
        ("GET", "/v1/jobs/job_x", None),
        ("POST", "/v1/jobs/job_x/cancel", None),
        ("GET", "/v1/batches/batch_x", None),
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
    ]:
        resp = client.request(method, path, json=body)
        assert resp.status_code == 503, (path, resp.text)
        assert resp.headers["retry-after"] == "5"
        message = resp.json().get("message") or resp.json().get("redis")
        assert "Redis" in message or "unreachable" in message, message


def test_api_keys() -> None:
    with TestClient(create_app(_settings()), client=("10.1.2.3", 5555)) as c:
        resp = c.post("/v2/rerank", json=_doc_body())
        assert resp.status_code == 401 and "loopback only" in resp.json()["message"]
    with TestClient(create_app(_settings(api_keys="alice:ka")), client=("10.1.2.3", 5555)) as c:
        assert c.post("/v2/rerank", json=_doc_body()).status_code == 401
        resp = c.post("/v2/rerank", json=_doc_body(), headers={"Authorization": "Bearer wrong"})
        assert resp.status_code == 401 and resp.json()["message"] == "invalid API key"
        resp = c.post("/v2/rerank", json=_doc_body(), headers={"Authorization": "Bearer ka"})
        assert resp.status_code == 503  # authenticated, then the (absent) store answers
        assert c.get("/healthz").status_code == 503  # health and metrics need no key


def test_models_list(client: TestClient) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert data["rerankd"]["model"] == "smollm2-135m-instruct"
    assert data["fast"]["model"] == "m2" and data["fast"]["strategy"]["name"] == "first"


def test_cohere_conversion() -> None:
    body = cohere.CohereRerankRequest(
        query="q",
        documents=["one two three four", {"title": "T", "body": "B"}],
        rank_fields=None,
        top_n=1,
        return_documents=True,
        max_tokens_per_doc=2,
    )
    with pytest.raises(Exception, match="needs a 'text'"):
        cohere.texts_of(body)
    body.rank_fields = ["title", "body"]
    texts = cohere.texts_of(body)
    assert texts == ["one two three four", "title: T\nbody: B"]
    strategy = Settings().strategy
    req = cohere.to_request(body, texts, strategy)
    assert [c.text for c in req.candidates] == texts and req.top_n == 1 and req.max_tokens_per_doc == 2
    result = RerankResult(
        ranking=[
            RankedDoc(docid="1", rank=1, score=7.0, first_stage_rank=2),
            RankedDoc(docid="0", rank=2, score=-1.0, first_stage_rank=1),
        ],
        strategy="icr",
        model="m",
    )
    out = cohere.response("job_1", body, result, "2")
    assert out["id"] == "job_1" and out["meta"]["api_version"] == {"version": "2"}
    assert out["results"] == [{"index": 1, "relevance_score": 1.0, "document": {"title": "T", "body": "B"}}]
    # relevance_score = 1 - (rank - 1) / n whatever the strategy's scores and top_n
    body.top_n, body.return_documents = None, False
    out = cohere.response("job_1", body, result, "2")
    assert out["results"] == [{"index": 1, "relevance_score": 1.0}, {"index": 0, "relevance_score": 0.5}]
    scaled = result.model_copy(
        update={"ranking": [d.model_copy(update={"score": d.score / 100}) for d in result.ranking]}
    )
    assert cohere.response("job_1", body, scaled, "2")["results"] == out["results"]
    assert out["meta"]["billed_units"]["search_units"] == 1
