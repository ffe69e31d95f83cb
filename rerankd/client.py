"""Python clients of the rerankd API (httpx): :class:`Client` and :class:`AsyncClient`.

>>> with Client("http://127.0.0.1:8080", api_key="...") as c:
...     job = c.submit_job(request)          # a RerankRequest or its JSON dict
...     job = c.wait(job["id"])
...     job["result"]["ranking"][0]
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from rerankd.types import RerankRequest

__all__ = ["AsyncClient", "Client", "RerankdError"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
DEFAULT_URL = "http://127.0.0.1:8080"


class RerankdError(RuntimeError):
    """An error answer of the API (``status`` and the server's ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def error_message(resp: httpx.Response) -> str:
    """The ``message`` of an API error answer (the raw text when it is not JSON)."""
    try:
        return str(resp.json().get("message", resp.text))
    except (ValueError, AttributeError):
        return resp.text


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise RerankdError(resp.status_code, error_message(resp))
    return resp.json()


def job_body(
    request: RerankRequest | dict[str, Any],
    model: str | None,
    callback_url: str | None,
    deadline_s: float | None,
) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body of ``request`` (only the fields it sets) plus the job options."""
    body = request.model_dump(mode="json", exclude_unset=True) if isinstance(request, RerankRequest) else dict(request)
    if isinstance(request, RerankRequest) and "strategy" in request.model_fields_set:
        body["strategy"] = request.strategy.model_dump(mode="json")
    for key, value in (("model", model), ("callback_url", callback_url), ("deadline_s", deadline_s)):
        if value is not None:
            body[key] = value
    return body


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("RERANKD_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _rerank_body(
    query: str,
    documents: list[str] | list[dict[str, Any]],
    model: str | None,
    top_n: int | None,
    return_documents: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "documents": documents, "return_documents": return_documents}
    if model is not None:
        body["model"] = model
    if top_n is not None:
        body["top_n"] = top_n
    return body


class Client:
    """Synchronous client."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 300.0) -> None:
        self.http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def rerank(
        self,
        query: str,
        documents: list[str] | list[dict[str, Any]],
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> dict[str, Any]:
        """Cohere-shaped synchronous rerank (``POST /v2/rerank``)."""
        body = _rerank_body(query, documents, model, top_n, return_documents)
        return dict(_check(self.http.post("/v2/rerank", json=body)))

    def submit_job(
        self,
        request: RerankRequest | dict[str, Any],
        model: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """Queue a job (``POST /v1/jobs``); returns the job (``id``, ``status``...)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = job_body(request, model, callback_url, deadline_s)
        return dict(_check(self.http.post("/v1/jobs", json=body, headers=headers)))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(_check(self.http.get(f"/v1/jobs/{job_id}")))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(_check(self.http.post(f"/v1/jobs/{job_id}/cancel")))

    def wait(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        """Poll until the job is final; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll_s)


class AsyncClient:
    """Asynchronous client (same methods as :class:`Client`, as coroutines)."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 300.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def rerank(
        self,
        query: str,
        documents: list[str] | list[dict[str, Any]],
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> dict[str, Any]:
        body = _rerank_body(query, documents, model, top_n, return_documents)
        return dict(_check(await self.http.post("/v2/rerank", json=body)))

    async def submit_job(
        self,
        request: RerankRequest | dict[str, Any],
        model: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = job_body(request, model, callback_url, deadline_s)
        return dict(_check(await self.http.post("/v1/jobs", json=body, headers=headers)))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(_check(await self.http.get(f"/v1/jobs/{job_id}")))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(_check(await self.http.post(f"/v1/jobs/{job_id}/cancel")))

    async def wait(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            await asyncio.sleep(poll_s)
