"""Request bodies of our own endpoints (Cohere's shape is in :mod:`rerankd.api.cohere`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rerankd.types import RerankRequest, StrategyConfig
from rerankd.webhooks.egress import EgressError, parse_callback_url

__all__ = ["BatchBody", "BatchLine", "JobCreate", "our_request"]


class JobCreate(RerankRequest):
    """``POST /v1/jobs``: our rerank request plus where and how to run it."""

    model: str | None = None
    callback_url: str | None = None
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        """Syntax only (http(s), no credentials, a valid host); the egress policy, which needs
        the settings and DNS, runs in the service (:func:`rerankd.webhooks.admission.check_callback`)."""
        if v is not None:
            try:
                parse_callback_url(v)
            except EgressError as e:
                raise ValueError(str(e)) from None
        return v


class BatchLine(BaseModel):
    """One line of a batch file (OpenAI-batch style; ``method``/``url`` are ignored)."""

    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1)
    body: dict[str, Any]


class BatchBody(RerankRequest):
    """The ``body`` of a batch line: our rerank request and an optional ``model``."""

    model: str | None = None


def our_request(body: RerankRequest, default_strategy: StrategyConfig) -> RerankRequest:
    """``body`` as a plain :class:`RerankRequest`; the model's strategy unless the body names one."""
    return RerankRequest(
        query=body.query,
        candidates=body.candidates,
        strategy=body.strategy if "strategy" in body.model_fields_set else default_strategy,
        top_n=body.top_n,
        feedback=body.feedback,
        max_tokens_per_doc=body.max_tokens_per_doc,
    )
