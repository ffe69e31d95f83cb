"""One admission path: every API shape becomes an ``Ask`` that ``Admission`` checks the same way
and turns into a job's fields and broker message (no Redis needed)."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from rerankd.api import cohere
from rerankd.api.admission import Admission, Ask
from rerankd.api.app import create_app
from rerankd.api.errors import ApiError
from rerankd.api.routers.tei import TeiRerankRequest, tei_ask
from rerankd.api.schemas import BatchBody, JobCreate
from rerankd.config import Settings
from rerankd.jobs.quotas import BATCH, LOW
from rerankd.types import RerankRequest, StrategyConfig


def _settings() -> Settings:
    with socket.socket() as s:  # a port where nothing listens: nothing below may touch Redis
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_timeout_s=0.5,
        max_documents=3,
        max_document_chars=10,
        max_query_chars=8,
        max_docid_chars=4,
        job_deadline_s=60,
    )


def _ours(**kw: Any) -> dict[str, Any]:
    return {"query": {"text": "q"}, "candidates": [{"docid": "d0", "text": "a"}, {"docid": "d1", "text": "b"}], **kw}


def _message_queue(message: str) -> tuple[str, int, list[str]]:
    envelope = json.loads(message)
    args = json.loads(base64.b64decode(envelope["body"]))[0]
    info = envelope["properties"]
    return info["delivery_info"]["routing_key"], info["priority"], args


def _raises(ask: Ask, where: str = "") -> ApiError:
    with pytest.raises(ApiError) as e:
        Admission(_settings()).check(ask, where)
    return e.value


def test_every_shape_gets_the_same_limit_checks_under_its_own_field_name() -> None:
    s = _settings()
    long_query = "q" * 9
    asks = {
        "documents": cohere.ask(cohere.CohereRerankRequest(query=long_query, documents=["a"])),
        "texts": tei_ask(TeiRerankRequest(query=long_query, texts=["a"]), s),
        "candidates": Ask.of(JobCreate.model_validate(_ours(query={"text": long_query}))),
    }
    for field, ask in asks.items():
        err = _raises(ask)
        assert (err.status, err.message) == (422, "query: 9 characters exceed the limit of 8 (RERANKD_MAX_QUERY_CHARS)")
        err = _raises(ask.__class__(**{**ask.__dict__, "texts": ["a"] * 4}))
        assert err.status == 413 and err.message.startswith(f"{field}: 4 documents exceed the limit of 3")


def test_batch_lines_prefix_their_line_and_fields_are_checked_after_building() -> None:
    body = BatchBody.model_validate(_ours(candidates=[{"docid": "toolong", "text": "a"}]))
    err = _raises(Ask.of(body, "rerankd", priority=BATCH), where="line 3: ")
    assert err.field == "line 3: candidates[0].docid" and err.setting == "RERANKD_MAX_DOCID_CHARS"
    err = _raises(Ask.of(BatchBody.model_validate(_ours(candidates=[{"docid": "d", "text": "x" * 11}]))), "line 2: ")
    assert err.message.startswith("line 2: candidates[0]: 11 characters exceed")


def test_unknown_model_deadline_and_cohere_object_fields() -> None:
    assert _raises(Ask.of(JobCreate.model_validate(_ours(model="nope")))).code == "unknown_model"
    err = _raises(Ask.of(JobCreate.model_validate(_ours(deadline_s=61))))
    assert (err.status, err.field) == (422, "deadline_s")
    body = cohere.CohereRerankRequest(query="q", documents=[{"text": "a", "meta": "m" * 11}])
    assert _raises(cohere.ask(body)).field == "documents[0].meta"


def test_nothing_to_rank_is_a_422_naming_the_field_and_its_minimum() -> None:
    for model, field in [(cohere.CohereRerankRequest, "documents"), (TeiRerankRequest, "texts")]:
        with pytest.raises(ValidationError) as e:
            model.model_validate({"query": "q", field: []})
        assert e.value.errors()[0]["loc"] == (field,) and e.value.errors()[0]["ctx"]["min_length"] == 1

    # the admission refuses it too, whatever built the Ask
    def build(_: StrategyConfig) -> RerankRequest:
        raise AssertionError("nothing to build")

    err = _raises(Ask(model=None, query="q", texts=[], build=build, field="texts"), "line 2: ")
    assert (err.status, err.field, err.limit) == (422, "line 2: texts", 1)
    assert err.message == "line 2: texts: at least 1 item is needed"


def test_tei_truncate_cuts_to_the_limits_before_the_checks() -> None:
    s = _settings()
    body = TeiRerankRequest(query="abcdefghij", texts=["0123456789AB"], truncate=True, truncation_direction="Left")
    admitted = Admission(s).check(tei_ask(body, s))
    assert admitted is not None
    assert admitted.request.query.text == "cdefghij" and admitted.request.candidates[0].text == "23456789AB"


def test_one_job_builder_for_sync_reranks_jobs_and_batches() -> None:
    admission = Admission(_settings())
    sync = admission.check(cohere.ask(cohere.CohereRerankRequest(query="q", documents=["a", "b"], priority=5)))
    job = admission.check(Ask.of(JobCreate.model_validate(_ours(deadline_s=30))))
    line = admission.check(Ask.of(BatchBody.model_validate(_ours()), priority=BATCH))
    assert sync is not None and job is not None and line is not None
    admitted = {"rerank": sync, "job": job, "batch": line}
    made = {
        "rerank": admission.job("alice", sync, "rerank", expires_in=7.5),
        "job": admission.job("alice", job),
        "batch": admission.job("alice", line, "batch", batch_id="batch_1", custom_id="c1"),
    }
    for kind, new in made.items():
        assert new.fields["kind"] == kind and new.fields["owner"] == "alice"
        queue, priority, args = _message_queue(new.message)
        assert queue == new.fields["queue"] == admitted[kind].queue and args == [new.id]
        assert priority == int(new.fields.get("priority", "0"))
    assert made["rerank"].fields["priority"] == str(LOW) and made["rerank"].fields["expires_in"] == "7.500000"
    assert made["job"].fields["deadline_s"] == "30.0" and "priority" not in made["job"].fields
    assert made["batch"].fields["priority"] == str(BATCH) and made["batch"].fields["deadline_s"] == "60.0"
    assert (made["batch"].fields["batch_id"], made["batch"].fields["custom_id"]) == ("batch_1", "c1")


def test_empty_sync_requests_are_422_as_an_empty_job() -> None:
    with TestClient(create_app(_settings()), client=("127.0.0.1", 5555)) as client:
        for path, field, body in [
            ("/v1/rerank", "documents", {"query": "q", "documents": []}),
            ("/v2/rerank", "documents", {"query": "q", "documents": []}),
            ("/rerank", "texts", {"query": "q", "texts": []}),
            ("/v1/jobs", "candidates", {"query": {"text": "q"}, "candidates": []}),
        ]:
            r = client.post(path, json=body)
            assert r.status_code == 422, (path, r.text)
            assert r.json() == {
                "message": f"{field}: List should have at least 1 item after validation, not 0",
                "code": "invalid_request",
                "field": field,
                "limit": 1,
            }
        r = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"Prefer": "wait=x"})
        assert r.status_code == 422 and r.json()["field"] == "Prefer"
