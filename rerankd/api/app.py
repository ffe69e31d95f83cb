"""The FastAPI application: ``create_app(settings)``.

A job is created and queued in one Lua script (record + broker message, atomically).

Endpoints: ``POST /v1/rerank`` and ``/v2/rerank`` (Cohere's shape, synchronous: enqueue,
wait, answer), ``POST /v1/jobs`` + ``GET /v1/jobs/{id}`` + ``POST /v1/jobs/{id}/cancel``
(asynchronous jobs, ``Idempotency-Key``, signed callbacks), ``POST /v1/batches`` (JSONL of
``{custom_id, body}``) + ``GET /v1/batches/{id}`` + ``GET /v1/batches/{id}/results`` +
``POST /v1/batches/{id}/cancel``, ``GET /v1/models``, ``GET /healthz`` and ``GET /metrics``.

Redis or broker trouble answers 503 with Retry-After, never 500.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rerankd.api import cohere
from rerankd.api.auth import Authenticator
from rerankd.api.errors import ApiError, LimitError, limit_message
from rerankd.api.limits import BodyLimitMiddleware, check_request
from rerankd.api.metrics import render as render_metrics
from rerankd.api.waiter import JobWaiter
from rerankd.config import Settings, get_settings
from rerankd.jobs import TERMINAL, JobRecord, JobStore, body_hash, new_id
from rerankd.types import RerankRequest, StrategyConfig
from rerankd.worker import TASK_NAME
from rerankd.worker.celery_app import make_celery, task_message

__all__ = ["BatchLine", "JobCreate", "create_app"]

log = logging.getLogger(__name__)

_ERROR_STATUS = {
    "invalid_request": 422,
    "deadline_exceeded": 504,
    "worker_lost": 503,
    "engine_error": 500,
    "cancelled": 409,
    "expired": 503,
}


class JobCreate(RerankRequest):
    """``POST /v1/jobs``: our rerank request plus where and how to run it."""

    model: str | None = None
    callback_url: str | None = None
    deadline_s: float | None = Field(default=None, gt=0)

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"callback_url must be an http(s) URL, got {v!r}")
        return v


class BatchLine(BaseModel):
    """One line of a batch file (OpenAI-batch style; ``method``/``url`` are ignored)."""

    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1)
    body: dict[str, Any]


class BatchBody(RerankRequest):
    model: str | None = None


class Service:
    """What the routes share: settings, store, waiter, broker client, authenticator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobStore.from_url(settings.broker_url, settings.key_prefix, timeout_s=settings.redis_timeout_s)
        self.waiter = JobWaiter(self.store)
        self.celery = make_celery(settings)
        self.auth = Authenticator(settings.api_key_map())

    # ------------------------------------------------------------------ helpers

    def unavailable(self, message: str) -> ApiError:
        return ApiError(503, message, {"Retry-After": str(self.settings.retry_after_s)})

    def resolve(self, name: str | None) -> tuple[str, StrategyConfig, str]:
        try:
            model, strategy = self.settings.resolve_model(name)
        except KeyError as e:
            raise ApiError(404, str(e.args[0])) from None
        return model, strategy, self.settings.queue_for(model)

    def message(self, job_id: str, queue: str) -> str:
        """The broker message that runs ``job_id`` (pushed by the create script)."""
        return task_message(self.celery, TASK_NAME, job_id, queue)

    async def metric(self, name: str, labels: dict[str, str]) -> None:
        m = self.store.metrics()
        m.inc(name, labels)
        await self.store.flush_metrics(m)

    def check_our_request(self, req: RerankRequest, where: str = "") -> None:
        try:
            check_request(self.settings, req.query.text, [c.text for c in req.candidates], field=f"{where}candidates")
        except LimitError as e:
            if where:
                e.message = where + e.message
            raise

    async def owned(self, job_id: str, owner: str) -> JobRecord:
        record = await self.store.get(job_id)
        if record is None or record.owner != owner:
            raise ApiError(404, f"no job {job_id!r}")
        return record


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def _prefer_wait(header: str | None) -> float | None:
    if not header:
        return None
    m = re.search(r"wait\s*=\s*([0-9.]+)", header)
    return float(m.group(1)) if m else None


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _validation_message(errors: Iterable[Any]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    svc = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("rerankd").setLevel(settings.log_level.upper())
        if not svc.auth.enabled:
            log.warning(
                "no API keys configured (RERANKD_API_KEYS / RERANKD_API_KEYS_FILE): serving "
                "unauthenticated requests from loopback clients only"
            )
        else:
            log.info("API keys enforced for %d owner(s)", len(set(svc.auth.keys.values())))
        svc.waiter.start()
        try:
            yield
        finally:
            await svc.waiter.stop()
            await svc.store.aclose()

    app = FastAPI(title="rerankd", version="0.1.0", lifespan=lifespan)
    app.state.service = svc
    app.add_middleware(BodyLimitMiddleware, settings=settings)

    # ------------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body = {"message": exc.message} if exc.code is None else {"message": exc.message, "code": exc.code}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": _validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(redis.exceptions.RedisError)
    async def _redis_down(_: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
        log.warning("Redis error: %s", exc)
        return JSONResponse(
            {"message": f"job store unavailable: cannot reach Redis ({type(exc).__name__}: {exc})"},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    # ------------------------------------------------------------------ sync rerank

    async def run_sync(owner: str, model: str, queue: str, req: RerankRequest, timeout: float) -> JobRecord:
        job_id = new_id("job")
        fields = svc.store.job_fields(
            owner=owner,
            model=model,
            queue=queue,
            request=req,
            deadline_s=settings.job_deadline_s,
            max_attempts=settings.max_attempts,
            kind="rerank",
            expires_in=timeout,
        )
        fut = svc.waiter.register(job_id)
        try:
            m = svc.store.metrics()
            m.inc("jobs_submitted_total", {"kind": "rerank", "model": model, "strategy": req.strategy.name})
            created = await svc.store.create(
                job_id,
                fields,
                ttl_s=settings.job_ttl_s,
                max_depth=settings.max_queue_depth,
                metrics=m,
                message=svc.message(job_id, queue),
            )
            if created.outcome == "full":
                await svc.metric("jobs_rejected_total", {"reason": "queue_full", "model": model})
                raise svc.unavailable(
                    f"queue {queue} is full (RERANKD_MAX_QUEUE_DEPTH={settings.max_queue_depth}); retry later"
                )
        except BaseException:
            svc.waiter.unregister(job_id, fut)
            raise
        record = await svc.waiter.wait(job_id, fut, timeout)
        if record is None or not record.terminal:
            if await svc.store.expire_if_queued(job_id):
                await svc.metric(
                    "jobs_finished_total",
                    {"status": "expired", "model": model, "strategy": req.strategy.name},
                )
                raise svc.unavailable(f"no worker took the job within {timeout:g}s (queue {queue}); retry later")
            raise svc.unavailable(
                f"the job did not finish within {timeout:g}s; it goes on as job {job_id} (GET /v1/jobs/{job_id})"
            )
        if record.status != "succeeded":
            code = record.error_code or "engine_error"
            raise ApiError(_ERROR_STATUS.get(code, 500), f"job {job_id} {record.status}: {record.error}")
        return record

    async def cohere_rerank(request: Request, body: cohere.CohereRerankRequest, version: str) -> dict[str, Any]:
        owner = svc.auth.owner(request)
        model, strategy, queue = svc.resolve(body.model)
        texts = cohere.texts_of(body)
        check_request(settings, body.query, texts)
        if not body.documents:
            return cohere.response(new_id("job"), body, None, version)
        try:
            req = cohere.to_request(body, texts, strategy)
        except ValidationError as e:
            raise ApiError(422, _validation_message(e.errors())) from None
        wait = _prefer_wait(request.headers.get("prefer"))
        timeout = min(wait, settings.sync_timeout_s) if wait else settings.sync_timeout_s
        record = await run_sync(owner, model, queue, req, timeout)
        return cohere.response(record.id, body, record.result, version)

    @app.post("/v1/rerank")
    async def rerank_v1(request: Request, body: cohere.CohereRerankRequest) -> JSONResponse:
        """Cohere v1 rerank (synchronous)."""
        return JSONResponse(await cohere_rerank(request, body, "1"))

    @app.post("/v2/rerank")
    async def rerank_v2(request: Request, body: cohere.CohereRerankRequest) -> JSONResponse:
        """Cohere v2 rerank (synchronous)."""
        return JSONResponse(await cohere_rerank(request, body, "2"))

    # ------------------------------------------------------------------ jobs

    @app.post("/v1/jobs", status_code=202)
    async def create_job(
        request: Request,
        body: JobCreate,
        idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
    ) -> JSONResponse:
        """Queue a rerank job; 202 with ``Location``.  Same Idempotency-Key and body: same job."""
        owner = svc.auth.owner(request)
        model, strategy, queue = svc.resolve(body.model)
        req = RerankRequest(
            query=body.query,
            candidates=body.candidates,
            strategy=body.strategy if "strategy" in body.model_fields_set else strategy,
            top_n=body.top_n,
            feedback=body.feedback,
        )
        svc.check_our_request(req)
        deadline = body.deadline_s or settings.job_deadline_s
        if deadline > settings.job_deadline_s:
            raise LimitError(
                422,
                limit_message(
                    "deadline_s",
                    int(deadline),
                    "seconds",
                    int(settings.job_deadline_s),
                    "RERANKD_JOB_DEADLINE_S",
                ),
            )
        if body.callback_url and not settings.webhook_secret:
            raise ApiError(422, "callback_url needs a webhook secret on the server (RERANKD_WEBHOOK_SECRET)")
        idem = None
        if idempotency_key:
            if len(idempotency_key) > 255:
                raise ApiError(422, "Idempotency-Key: at most 255 characters")
            idem = (owner, idempotency_key, body_hash(body.model_dump(mode="json")))
        job_id = new_id("job")
        fields = svc.store.job_fields(
            owner=owner,
            model=model,
            queue=queue,
            request=req,
            deadline_s=deadline,
            max_attempts=settings.max_attempts,
            callback_url=body.callback_url,
        )
        m = svc.store.metrics()
        m.inc("jobs_submitted_total", {"kind": "job", "model": model, "strategy": req.strategy.name})
        created = await svc.store.create(
            job_id,
            fields,
            ttl_s=settings.job_ttl_s,
            max_depth=settings.max_queue_depth,
            idempotency=idem,
            metrics=m,
            message=svc.message(job_id, queue),
        )
        if created.outcome == "conflict":
            raise ApiError(
                422,
                f"Idempotency-Key {idempotency_key!r} was already used with a different body (job {created.job_id})",
            )
        if created.outcome == "full":
            await svc.metric("jobs_rejected_total", {"reason": "queue_full", "model": model})
            raise svc.unavailable(f"queue {queue} is full (RERANKD_MAX_QUEUE_DEPTH={settings.max_queue_depth})")
        headers = {"Location": f"/v1/jobs/{created.job_id}"}
        if created.outcome == "existing":
            record = await svc.store.get(created.job_id)
            if record is None:
                raise ApiError(
                    404, f"job {created.job_id} of this Idempotency-Key has expired", code="idempotency_key_expired"
                )
            return JSONResponse(record.public(), status_code=202, headers={**headers, "Idempotent-Replayed": "true"})
        record = await svc.store.get(job_id)
        assert record is not None
        return JSONResponse(record.public(), status_code=202, headers=headers)

    @app.get("/v1/jobs/{job_id}")
    async def get_job(request: Request, job_id: str, include: str | None = None) -> dict[str, Any]:
        """A job's status, result or error (``?include=request,history`` for more)."""
        owner = svc.auth.owner(request)
        record = await svc.owned(job_id, owner)
        parts = set((include or "").split(","))
        out = record.public(include_request="request" in parts)
        if "history" in parts:
            out["history"] = await svc.store.history(job_id)
        return out

    @app.post("/v1/jobs/{job_id}/cancel")
    async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
        """Cancel a queued job now, or ask the worker running it to stop."""
        owner = svc.auth.owner(request)
        outcome, status = await svc.store.cancel(job_id, owner)
        if outcome == "missing":
            raise ApiError(404, f"no job {job_id!r}")
        if outcome == "final":
            raise ApiError(409, f"job {job_id} already {status}")
        record = await svc.owned(job_id, owner)
        return record.public()

    # ------------------------------------------------------------------ batches

    async def read_batch_body(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "multipart batch upload needs a 'file' field")
            return await upload.read()
        return await request.body()

    @app.post("/v1/batches", status_code=202)
    async def create_batch(request: Request, model: str | None = None) -> JSONResponse:
        """A JSONL file of ``{custom_id, body}`` lines -> one job per line."""
        owner = svc.auth.owner(request)
        raw = await read_batch_body(request)
        lines = [
            (n, line) for n, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), 1) if line.strip()
        ]
        if not lines:
            raise ApiError(422, "the batch file has no lines")
        if len(lines) > settings.max_batch_lines:
            raise LimitError(
                413,
                limit_message("batch", len(lines), "lines", settings.max_batch_lines, "RERANKD_MAX_BATCH_LINES"),
            )
        batch_id = new_id("batch")
        jobs: list[tuple[str, dict[str, str], str | None]] = []
        seen: set[str] = set()
        submitted: dict[tuple[str, str], int] = {}
        for n, text in lines:
            try:
                line = BatchLine.model_validate_json(text)
                body = BatchBody.model_validate(line.body)
            except ValidationError as e:
                raise ApiError(422, f"line {n}: {_validation_message(e.errors())}") from None
            if line.custom_id in seen:
                raise ApiError(422, f"line {n}: custom_id {line.custom_id!r} is duplicated")
            seen.add(line.custom_id)
            m, strategy, queue = svc.resolve(body.model or model)
            req = RerankRequest(
                query=body.query,
                candidates=body.candidates,
                strategy=body.strategy if "strategy" in body.model_fields_set else strategy,
                top_n=body.top_n,
                feedback=body.feedback,
            )
            svc.check_our_request(req, where=f"line {n}: ")
            job_id = new_id("job")
            jobs.append(
                (
                    job_id,
                    svc.store.job_fields(
                        owner=owner,
                        model=m,
                        queue=queue,
                        request=req,
                        deadline_s=settings.job_deadline_s,
                        max_attempts=settings.max_attempts,
                        kind="batch",
                        batch_id=batch_id,
                        custom_id=line.custom_id,
                    ),
                    svc.message(job_id, queue),
                )
            )
            key = (m, req.strategy.name)
            submitted[key] = submitted.get(key, 0) + 1
        created_at = time.time()
        await svc.store.create_many(jobs, ttl_s=settings.job_ttl_s)
        await svc.store.batches.create(
            batch_id,
            owner,
            [j for j, _, _ in jobs],
            {"created_at": f"{created_at:.6f}", "total": str(len(jobs))},
            ttl_s=settings.job_ttl_s,
        )
        m_ = svc.store.metrics()
        for (mod, strat), count in submitted.items():
            m_.inc("jobs_submitted_total", {"kind": "batch", "model": mod, "strategy": strat}, count)
        await svc.store.flush_metrics(m_)
        out = await batch_status(batch_id, owner)
        return JSONResponse(out, status_code=202, headers={"Location": f"/v1/batches/{batch_id}"})

    async def batch_status(batch_id: str, owner: str) -> dict[str, Any]:
        found = await svc.store.batches.get(batch_id)
        if found is None or found[0].get("owner") != owner:
            raise ApiError(404, f"no batch {batch_id!r}")
        meta, items = found
        counts = {s: 0 for s in ("queued", "running", "succeeded", "failed", "cancelled", "expired")}
        for st in await svc.store.statuses(items):
            counts[st or "expired"] = counts.get(st or "expired", 0) + 1
        done = sum(counts[s] for s in TERMINAL)
        return {
            "id": batch_id,
            "object": "batch",
            "status": "completed" if done == len(items) else "in_progress",
            "created_at": float(meta.get("created_at", 0)),
            "total": len(items),
            "finished": done,
            "counts": counts,
        }

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
        """A batch's status and counts by job status."""
        return await batch_status(batch_id, svc.auth.owner(request))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
        """Cancel every job of a batch that has not finished."""
        owner = svc.auth.owner(request)
        await batch_status(batch_id, owner)
        found = await svc.store.batches.get(batch_id)
        assert found is not None
        for job_id in found[1]:
            await svc.store.cancel(job_id, owner)
        return await batch_status(batch_id, owner)

    @app.get("/v1/batches/{batch_id}/results")
    async def batch_results(request: Request, batch_id: str) -> Response:
        """Per-line results as JSONL, in input order: ``{custom_id, response}`` or ``{custom_id, error}``."""
        owner = svc.auth.owner(request)
        status = await batch_status(batch_id, owner)
        if status["status"] != "completed":
            raise ApiError(
                409,
                f"batch {batch_id} is in progress: {status['finished']} of {status['total']} jobs finished",
            )
        found = await svc.store.batches.get(batch_id)
        assert found is not None
        out: list[dict[str, Any]] = []
        for job_id, record in zip(found[1], await svc.store.get_many(found[1]), strict=False):
            if record is None:
                out.append({"custom_id": None, "error": {"code": "expired", "message": f"job {job_id} has expired"}})
            elif record.status == "succeeded" and record.result is not None:
                out.append({"custom_id": record.custom_id, "response": record.result.model_dump(mode="json")})
            else:
                out.append(
                    {
                        "custom_id": record.custom_id,
                        "error": {
                            "code": record.error_code or record.status,
                            "message": record.error or record.status,
                        },
                    }
                )
        text = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in out)
        return PlainTextResponse(text, media_type="application/x-ndjson")

    # ------------------------------------------------------------------ ops

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        """The names a request's ``model`` may take."""
        svc.auth.owner(request)
        data = []
        names = [settings.default_alias, *settings.aliases, *settings.served_models()]
        for name in dict.fromkeys(names):
            model, strategy = settings.resolve_model(name)
            data.append({"id": name, "object": "model", "model": model, "strategy": strategy.model_dump()})
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 when Redis answers and at least one worker is alive; 503 otherwise."""
        try:
            await svc.store.r.ping()
            workers = await svc.store.workers.live()
            depths = {
                svc.settings.queue_for(m): await svc.store.queue_depth(svc.settings.queue_for(m))
                for m in settings.served_models()
            }
        except redis.exceptions.RedisError as e:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "redis": f"unreachable: {type(e).__name__}: {e}",
                    "message": f"cannot reach Redis at {_safe_url(settings.broker_url)}",
                    "workers": [],
                },
                status_code=503,
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        hosted = {w.get("model") for w in workers}
        body = {
            "status": "ok" if workers else "unavailable",
            "redis": "ok",
            "workers": [
                {
                    "id": w["id"],
                    "model": w.get("model"),
                    "queue": w.get("queue"),
                    "running": int(w.get("running", 0)),
                }
                for w in workers
            ],
            "queues": depths,
            "models_without_workers": [m for m in settings.served_models() if m not in hosted],
        }
        if not workers:
            body["message"] = "no live worker"
        return JSONResponse(body, status_code=200 if workers else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics (global: read from Redis)."""
        text = await render_metrics(svc.store, [settings.queue_for(m) for m in settings.served_models()])
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
