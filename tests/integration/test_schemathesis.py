"""Schemathesis against the real stack (uvicorn, Redis, Celery workers on the SleepEngine and the
tiny model): no 5xx other than the documented 503s, and every answer matches the OpenAPI
document (status, content type, headers, body).  Bounded: a few examples per operation.

Every request runs as alice, on the ``slow`` model (the SleepEngine: answers at once) and with
``Prefer: wait=5``, so a generated request never waits for a real model or a long timeout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stack import Service

pytestmark = pytest.mark.integration

EXAMPLES = 6  # per operation and mode: 13 operations x 2 modes, under a minute on the SleepEngine


@schemathesis.serializer("application/x-ndjson")
def _jsonl(ctx: Any, value: Any) -> bytes:
    """A batch file: the generated list of lines, one JSON document per line."""
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _on_slow_model(body: Any) -> Any:
    if isinstance(body, dict):
        if isinstance(body.get("model"), str):
            body["model"] = "slow"
        body.pop("callback_url", None)  # webhooks: test_webhooks.py
        if isinstance(body.get("body"), dict):
            _on_slow_model(body["body"])
    elif isinstance(body, list):
        for item in body:
            _on_slow_model(item)
    return body


def no_5xx_but_documented_503(ctx: Any, response: Any, case: Any) -> None:
    """A 5xx is a failure unless it is a 503 with Retry-After that the operation documents."""
    status = response.status_code
    if status < 500:
        return
    documented = "503" in case.operation.definition.raw.get("responses", {})
    retry_after = response.headers.get("retry-after") or response.headers.get("Retry-After")
    assert status == 503 and documented and retry_after, f"{status} from {case.operation.label}: {response.text}"


CHECKS = [
    no_5xx_but_documented_503,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_api_matches_its_openapi_document(service: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    headers = {**service.headers(), "Prefer": "wait=5"}
    failures: list[str] = []
    calls = 0

    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: the document is invalid
        if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # only path parameters (any string is valid) or none: nothing to negate

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the failure is printed
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal calls
            _on_slow_model(case.body)
            if isinstance(case.query, dict) and isinstance(case.query.get("model"), str):
                case.query["model"] = "slow"
            response = case.call(headers=headers, timeout=60)
            calls += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            run()
        except Unsatisfiable:
            continue  # no invalid input exists for this operation's schema
        except Exception as e:  # collected: every operation is checked
            failures.append(f"{operation.label}: {type(e).__name__}: {e}")
    assert calls > 0
    assert not failures, "\n\n".join(failures)
