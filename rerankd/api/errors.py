"""API errors: every failure answers ``{"message": ...}`` with a meaningful status."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """An error answered as ``status`` with ``{"message": message}`` (and ``"code"`` when set:
    a stable name clients can act on)."""

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.code = code


class LimitError(ApiError):
    """A request over a configured limit (413 or 422); the message names the limit."""


def limit_message(what: str, value: int, unit: str, limit: int, setting: str) -> str:
    """E.g. ``documents: 1200 documents exceed the limit of 1000 (RERANKD_MAX_DOCUMENTS)``."""
    return f"{what}: {value} {unit} exceed the limit of {limit} ({setting})"
