"""Drop-in use: real client libraries (Cohere, LangChain, LlamaIndex, a TEI client) against a real
stack, the Cohere model-name mapping, TEI's POST /rerank, and the listing endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest

from rerankd.launchers.local import LocalStack
from rerankd.launchers.net import free_port
from tests.support.stack import KEYS, Service

pytestmark = pytest.mark.integration

DOCS = [
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Berlin is the capital of Germany.",
]
LLAMA_DEFAULT = "rerank-english-v3.0"  # llama-index-postprocessor-cohere-rerank's default model name


@pytest.fixture(scope="module")
def mapped(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second API on the same Redis and workers, with the opt-in model-name mapping."""
    env = {
        **service.env,
        "RERANKD_MODEL_MAP": json.dumps({"rerank-english-*": "tiny", "rerank-v3.5": "tiny"}),
        "RERANKD_UNKNOWN_MODEL": "tiny",
    }
    stack = LocalStack(env, tmp_path_factory.mktemp("mapped-api"))
    try:
        stack.start_api(free_port())
        yield stack.url
    finally:
        stack.stop()


def test_unknown_model_error_says_how_to_map_it(service: Service) -> None:
    resp = httpx.post(
        f"{service.url}/v2/rerank",
        json={"model": LLAMA_DEFAULT, "query": "q", "documents": DOCS},
        headers=service.headers(),
    )
    assert resp.status_code == 404
    message = resp.json()["message"]
    assert LLAMA_DEFAULT in message and "RERANKD_MODEL_MAP" in message and "RERANKD_UNKNOWN_MODEL" in message


def test_cohere_clients_with_cohere_model_names(mapped: str, service: Service) -> None:
    v2 = cohere.ClientV2(base_url=mapped, api_key=KEYS["alice"], timeout=120)
    resp = v2.rerank(model="rerank-v3.5", query="capital of France", documents=DOCS, top_n=2)
    assert len(resp.results) == 2 and {r.index for r in resp.results} <= {0, 1, 2}
    job = service.wait_job(resp.id)
    assert job["model"] == service.tiny_model  # ran on the model the name maps to

    v1 = cohere.Client(base_url=mapped, api_key=KEYS["alice"], timeout=120)
    resp1 = v1.rerank(model="rerank-english-v2.0", query="capital", documents=DOCS, return_documents=True)
    assert sorted(r.index for r in resp1.results) == [0, 1, 2]
    assert all(r.document is not None and r.document.text == DOCS[r.index] for r in resp1.results)

    other = v2.rerank(model="some-other-vendor-model", query="capital", documents=DOCS)  # RERANKD_UNKNOWN_MODEL
    assert sorted(r.index for r in other.results) == [0, 1, 2]


def test_langchain_cohere_rerank(mapped: str) -> None:
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(model="rerank-english-v3.0", cohere_api_key=KEYS["alice"], base_url=mapped, top_n=2)
    out = reranker.compress_documents([Document(page_content=d) for d in DOCS], "capital of France")
    assert len(out) == 2 and all(d.page_content in DOCS for d in out)
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)


def test_llamaindex_cohere_rerank_default_model(mapped: str) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(api_key=KEYS["alice"], base_url=mapped, top_n=2)  # model left at its default
    assert reranker.model == LLAMA_DEFAULT
    nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS]
    out = reranker.postprocess_nodes(nodes, QueryBundle("capital of France"))
    assert len(out) == 2 and all(n.node.get_content() in DOCS for n in out)


def test_llamaindex_tei_client(service: Service) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    reranker = TextEmbeddingInference(base_url=service.url, auth_token=f"Bearer {KEYS['alice']}", top_n=3)
    nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS]
    out = reranker.postprocess_nodes(nodes, QueryBundle("capital of France"))
    assert sorted(n.node.get_content() for n in out) == sorted(DOCS)
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


def test_tei_rerank_shape(service: Service) -> None:
    url, h = f"{service.url}/rerank", service.headers()
    body: dict[str, Any] = {"query": "capital", "texts": DOCS, "model": "tiny"}
    plain = httpx.post(url, json=body, headers=h, timeout=120).json()
    assert sorted(r["index"] for r in plain) == [0, 1, 2] and all(set(r) == {"index", "score"} for r in plain)
    assert [r["score"] for r in plain] == [1.0, 1.0 - 1 / 3, 1.0 - 2 / 3]
    rich = httpx.post(url, json={**body, "return_text": True, "raw_scores": True}, headers=h, timeout=120).json()
    assert all(r["text"] == DOCS[r["index"]] for r in rich)
    long = {**body, "texts": ["x" * 2500, "short"]}  # RERANKD_MAX_DOCUMENT_CHARS=2000 in the test stack
    refused = httpx.post(url, json=long, headers=h, timeout=120)
    assert refused.status_code in (413, 422) and "2000" in refused.json()["message"]
    cut = httpx.post(url, json={**long, "truncate": True}, headers=h, timeout=120)
    assert cut.status_code == 200 and sorted(r["index"] for r in cut.json()) == [0, 1]
    bad = httpx.post(url, json={"query": "q"}, headers=h)
    assert bad.status_code == 422 and "texts" in bad.json()["message"]
    assert httpx.post(url, json=body).status_code == 401


def _create(service: Service, owner: str, model: str, strategy: str | None = None) -> str:
    job: dict[str, Any] = {
        "query": {"text": "q"},
        "candidates": [{"docid": f"d{i}", "text": f"p {i}"} for i in range(2)],
        "model": model,
    }
    if strategy:
        job["strategy"] = {"name": strategy}
    resp = httpx.post(f"{service.url}/v1/jobs", json=job, headers=service.headers(owner))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def test_list_jobs_filters_and_pages(service: Service) -> None:
    since = time.time()
    ids = [_create(service, "bob", "tiny") for _ in range(3)]
    ids.append(_create(service, "bob", "tiny", strategy="full_ranking"))
    for j in ids:
        assert service.wait_job(j, owner="bob")["status"] == "succeeded"
    alice = _create(service, "alice", "tiny")
    url, h = f"{service.url}/v1/jobs", service.headers("bob")

    listed = httpx.get(url, params={"created_after": since}, headers=h).json()
    assert [j["id"] for j in listed["data"]] == ids[::-1]  # newest first, bob's only
    assert alice not in {j["id"] for j in listed["data"]}
    first = listed["data"][0]
    assert first["kind"] == "job" and first["documents"] == 2 and "result" not in first

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "created_after": since}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(url, params=params, headers=h).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]

    by_strategy = httpx.get(url, params={"strategy": "full_ranking", "created_after": since}, headers=h).json()
    assert [j["id"] for j in by_strategy["data"]] == [ids[3]]
    by_model = httpx.get(url, params={"model": "nope", "created_after": since}, headers=h).json()
    assert by_model["data"] == [] and by_model["next_cursor"] is None
    done = httpx.get(url, params={"status": "succeeded,failed", "created_after": since}, headers=h).json()
    assert len(done["data"]) == 4
    before = httpx.get(url, params={"created_before": since}, headers=h).json()
    assert not set(ids) & {j["id"] for j in before["data"]}

    bad = httpx.get(url, params={"status": "done"}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert httpx.get(url, params={"cursor": "???"}, headers=h).status_code == 422
    assert httpx.get(url, params={"limit": 0}, headers=h).status_code == 422
    assert httpx.get(url).status_code == 401


def test_list_batches(service: Service, tmp_path: Path) -> None:
    since = time.time()
    lines = [
        {"custom_id": f"c{i}", "body": {"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "x"}]}}
        for i in range(2)
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    h = service.headers("bob")
    created = httpx.post(f"{service.url}/v1/batches?model=tiny", content=data, headers=h).json()
    url = f"{service.url}/v1/batches"
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/{created['id']}", headers=h).json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    listed = httpx.get(url, params={"created_after": since}, headers=h).json()
    assert [b["id"] for b in listed["data"]] == [created["id"]]
    (batch,) = listed["data"]
    assert batch["total"] == 2 and batch["finished"] == 2 and batch["models"] == [service.tiny_model]
    assert httpx.get(url, params={"status": "in_progress", "created_after": since}, headers=h).json()["data"] == []
    assert httpx.get(url, params={"created_after": since}, headers=service.headers("alice")).json()["data"] == []
