"""Exception handlers: every error, ours or the framework's, answers :class:`~rerankd.api.errors.ErrorBody`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.api.errors import (
    ApiError,
    default_code,
    error_body,
    validation_field,
    validation_limit,
    validation_message,
)
from rerankd.config import Settings
from rerankd.jobs import StoreUnavailable

log = logging.getLogger(__name__)


def install(app: FastAPI, settings: Settings) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        body = _invalid_body(errors)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        # a model built from request data inside a route: still the caller's input at fault
        errors = exc.errors()
        body = _invalid_body(errors)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        return JSONResponse(error_body(str(exc.detail), default_code(status)), status_code=status, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _redis_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("Redis error: %s: %s", type(exc).__name__, exc)
        return JSONResponse(
            error_body(f"job store unavailable: cannot reach Redis ({type(exc).__name__})", "unavailable"),
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )


def _invalid_body(errors: Any) -> dict[str, Any]:
    """A 422's body: the message, the field and (when pydantic names one) the limit."""
    message = validation_message(errors)
    return error_body(message, "invalid_request", field=validation_field(errors), limit=validation_limit(errors))


class ErrorShieldMiddleware:
    """A bug still answers in the error shape (500, ``internal_error``), is logged with its
    traceback, and leaves the keep-alive connection usable (uvicorn closes it when an exception
    reaches the server)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = JSONResponse(error_body("internal error; see the server log", "internal_error"), status_code=500)
            await body(scope, receive, send)
