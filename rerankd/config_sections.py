"""Groups of settings that :class:`rerankd.config.Settings` inherits (one table each in docs/settings.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rerankd import config_checks

__all__ = ["LimitSettings", "QuotaOverride", "WebhookSettings"]


class QuotaOverride(BaseModel):
    """Per-key quota settings (``RERANKD_QUOTAS``); unset fields take the global ``quota_*``."""

    model_config = ConfigDict(extra="forbid")

    jobs_in_flight: int | None = Field(default=None, ge=0)
    batch_jobs_in_flight: int | None = Field(default=None, ge=0)
    requests_per_minute: int | None = Field(default=None, ge=0)
    documents_per_minute: int | None = Field(default=None, ge=0)


class LimitSettings(BaseSettings):
    """Size limits of requests and queues, and the per-key quotas (docs/fairness.md)."""

    model_config = SettingsConfigDict(env_prefix="RERANKD_", extra="ignore", validate_default=True)

    max_documents: int = Field(default=1000, ge=1, description="Documents per request (413 above).")
    max_document_chars: int = Field(default=20_000, ge=1, description="Characters per document (422 above).")
    max_query_chars: int = Field(default=4_000, ge=1, description="Characters of a query (422 above).")
    max_body_bytes: int = Field(default=10_000_000, ge=1024, description="Request body size (413 above).")
    max_batch_bytes: int = Field(default=100_000_000, ge=1024, description="Batch file size (413 above).")
    max_batch_lines: int = Field(default=10_000, ge=1, description="Lines of a batch file (413 above).")
    max_queue_depth: int = Field(
        default=1000,
        ge=0,
        description="Queued messages of a job's queue and lane (a model has a queue per capability) above "
        "which sync reranks, new jobs and batches get 503 + Retry-After.",
    )
    max_batch_queue_depth: int = Field(
        default=100_000,
        ge=0,
        description="Queued messages of a queue's batch lane above which new batches get 503 + Retry-After.",
    )
    max_docid_chars: int = Field(default=256, ge=1, description="Characters of a docid, qid or custom_id (422).")
    max_title_chars: int = Field(default=2_000, ge=1, description="Characters of a candidate title (422).")
    max_feedback_dimensions: int = Field(default=4096, ge=1, description="Dimensions of feedback vectors (422).")
    max_tokens_per_doc: int = Field(
        default=100_000, ge=1, description="Upper bound of a request's `max_tokens_per_doc` (422)."
    )
    quota_jobs_in_flight: int = Field(
        default=100,
        ge=0,
        description="Sync reranks and jobs of one key queued or running at once (429 above; 0: no limit).",
    )
    quota_batch_jobs_in_flight: int = Field(
        default=20_000, ge=0, description="Batch jobs of one key not yet finished (429 for a batch that would pass it)."
    )
    quota_requests_per_minute: int = Field(
        default=3000, ge=0, description="Reranks, jobs and batches one key may submit per minute (429; 0: no limit)."
    )
    quota_documents_per_minute: int = Field(
        default=300_000,
        ge=0,
        description="Documents of sync reranks and jobs one key may submit per minute (429; 0: no limit).",
    )
    quotas: dict[str, QuotaOverride] = Field(
        default_factory=dict,
        description='Per-key overrides: `{"name": {"jobs_in_flight": 10, "requests_per_minute": 60}}` (JSON, '
        "or a `[quotas.name]` TOML table); keys are the names of `RERANKD_API_KEYS`.",
    )

    def quota_for(self, owner: str) -> QuotaOverride:
        """The quotas of key ``owner``: its ``quotas`` entry over the global ``quota_*`` settings."""
        own = self.quotas.get(owner)
        values = {name: getattr(self, f"quota_{name}") for name in QuotaOverride.model_fields}
        if own is not None:
            values.update(own.model_dump(exclude_none=True))
        return QuotaOverride(**values)


class WebhookSettings(BaseSettings):
    """Callbacks of finished jobs (docs/webhooks.md)."""

    model_config = SettingsConfigDict(env_prefix="RERANKD_", extra="ignore", validate_default=True)

    webhook_secrets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per API key name, one Standard Webhooks secret or two during a rotation (both sign): "
        '`{"alice": ["whsec_new", "whsec_old"]}` (JSON / TOML table; docs/webhooks.md).',
    )
    webhook_secret: str | None = Field(
        default=None,
        description="Fallback secret of keys without an entry above (shared; `whsec_<base64>` or text).",
    )
    webhook_allow_hosts: str = Field(
        default="",
        description="Callback hosts (as written in the URL, comma-separated) allowed whatever they resolve "
        "to; for tests, private deployments.",
    )
    webhook_allow_cidrs: str = Field(
        default="", description="Networks (comma-separated CIDRs) whose addresses callbacks may reach."
    )
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0],
        max_length=20,
        description="Delays between delivery attempts (JSON); after the last one the callback is failed.",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one callback delivery.")

    _webhook_secrets = field_validator("webhook_secrets", mode="before")(config_checks.check_webhook_secrets)
    _cidrs = field_validator("webhook_allow_cidrs")(config_checks.check_cidrs)
    _schedule = field_validator("webhook_retry_schedule_s")(config_checks.check_delays)
