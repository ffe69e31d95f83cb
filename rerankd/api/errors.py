"""API errors: every failure answers one JSON shape, :class:`ErrorBody`.

``{"message": ..., "code": ...}`` always; ``"field"`` (the body field, header or batch line at
fault) and ``"limit"``/``"setting"`` (the limit broken and the setting that sets it) when they apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "ApiError",
    "ErrorBody",
    "LimitError",
    "default_code",
    "error_body",
    "limit_message",
    "validation_field",
    "validation_limit",
    "validation_message",
]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "engine_error",
    503: "unavailable",
    504: "timeout",
}


def default_code(status: int) -> str:
    """The ``code`` of an error of HTTP ``status`` that names no code of its own."""
    return _CODES.get(status, "error")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    message: str = Field(description="What went wrong, naming the field and the limit or setting at fault.")
    code: str = Field(description="A stable name clients can act on, e.g. invalid_request, too_large, unavailable.")
    field: str | None = Field(default=None, description="The body field, header or batch line at fault.")
    limit: int | None = Field(default=None, description="The limit that was exceeded.")
    setting: str | None = Field(default=None, description="The server setting (RERANKD_*) that sets the limit.")


class ApiError(Exception):
    """An error answered as ``status`` with an :class:`ErrorBody`."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
        field: str | None = None,
        limit: int | None = None,
        setting: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.code = code or default_code(status)
        self.field = field
        self.limit = limit
        self.setting = setting

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.code, field=self.field, limit=self.limit, setting=self.setting)


class LimitError(ApiError):
    """A request over a configured limit (413 or 422); the message names the limit."""

    @classmethod
    def over(cls, status: int, what: str, value: int, unit: str, limit: int, setting: str) -> LimitError:
        """``what`` holds ``value`` ``unit`` over ``limit`` (set by ``setting``)."""
        return cls(
            status,
            limit_message(what, value, unit, limit, setting),
            field=what,
            limit=limit,
            setting=setting,
            code="too_large" if status == 413 else "over_limit",
        )


def error_body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    """An :class:`ErrorBody` as a dict, without the parts that are ``None``."""
    return {"message": message, "code": code, **{k: v for k, v in extra.items() if v is not None}}


def limit_message(what: str, value: int, unit: str, limit: int, setting: str) -> str:
    """E.g. ``documents: 1200 documents exceed the limit of 1000 (RERANKD_MAX_DOCUMENTS)``."""
    return f"{what}: {value} {unit} exceed the limit of {limit} ({setting})"


def validation_message(errors: Iterable[Any]) -> str:
    """Pydantic/FastAPI validation errors as one line: ``loc: msg; loc: msg``."""
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def validation_field(errors: Iterable[Any]) -> str | None:
    """The location of the first validation error (``documents.0``, ``header.prefer``...)."""
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if loc:
            return ".".join(loc)
    return None


_LIMIT_KEYS = ("min_length", "max_length", "ge", "le", "gt", "lt")


def validation_limit(errors: Iterable[Any]) -> int | None:
    """The integer bound the first validation error broke (``min_length`` 1 of an empty list...), if any."""
    for err in errors:
        ctx = err.get("ctx") or {}
        for key in _LIMIT_KEYS:
            value = ctx.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None
    return None
