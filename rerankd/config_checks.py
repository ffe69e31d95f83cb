"""Checks behind :class:`rerankd.config.Settings`: unknown variables and TOML keys (with a
suggestion) and the field validators.  Pure functions of their arguments: they know the setting
names only as passed in (no import of the settings; the openai engine's and the device checks
are imported lazily)."""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CLIENT_ENV",
    "MAX_ACTIVE_SECRETS",
    "check_broker_url",
    "check_cidrs",
    "check_delays",
    "check_environment",
    "check_file_exists",
    "check_metrics_key",
    "check_optional_device",
    "check_optional_dtype",
    "check_toml_keys",
    "check_webhook_secret",
    "check_webhook_secrets",
    "is_amqp",
    "parse_api_keys",
    "shown",
    "split_commas",
]

CLIENT_ENV = frozenset({"RERANKD_API_URL", "RERANKD_URL", "RERANKD_API_KEY", "RERANKD_CACHE_DIR"})
"""``RERANKD_*`` variables read by the CLI, the client and the model cache (not settings)."""

MAX_ACTIVE_SECRETS = 2
"""Webhook secrets of one API key at once: the new and the old one during a rotation."""


AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
"""``RERANKD_BROKER_URL`` schemes of RabbitMQ (kombu's py-amqp transport)."""


def is_amqp(url: str | None) -> bool:
    """Whether ``url`` names a RabbitMQ broker."""
    return bool(url) and str(url).split("://", 1)[0].lower() in AMQP_SCHEMES


def check_broker_url(url: str | None) -> str | None:
    """``RERANKD_BROKER_URL``: unset, or an AMQP URL (the Redis broker is the job store itself:
    its scripts push messages into its lists, so another Redis cannot be the broker)."""
    if url is None or is_amqp(url):
        return url
    raise ValueError(
        f"RERANKD_BROKER_URL={url.split('://', 1)[0]}://...: expected amqp://user:password@host:5672/vhost "
        "(RabbitMQ); the Redis broker is the job store's own Redis (RERANKD_REDIS_URL): leave "
        "RERANKD_BROKER_URL unset for it"
    )


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


def check_webhook_secrets(value: Any) -> Any:
    """``webhook_secrets`` with each entry a list of one or two checked secrets."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, secrets in value.items():
        listed = [secrets] if isinstance(secrets, str) else list(secrets)
        if not 1 <= len(listed) <= MAX_ACTIVE_SECRETS:
            raise ValueError(f"webhook_secrets[{name!r}]: one secret, or two during a rotation")
        try:
            out[name] = [check_webhook_secret(s) for s in listed]
        except ValueError as e:
            raise ValueError(f"webhook_secrets[{name!r}]: {e}") from None
    return out


def check_cidrs(value: str) -> str:
    """``value`` if each comma-separated part is a CIDR network, else ``ValueError`` naming it."""
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"webhook_allow_cidrs: {part!r} is not a CIDR network") from None
    return value


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_environment(environ: Mapping[str, str], settings_env: set[str], prefix: str = "RERANKD_") -> None:
    """Raise ``ValueError`` for a ``RERANKD_*`` variable that is neither in ``settings_env`` nor
    one of the client's or the openai engine's variables."""
    known = settings_env | CLIENT_ENV
    for name in sorted(environ):
        if not name.startswith(prefix) or name in known:
            continue
        if name.startswith(f"{prefix}OPENAI_"):
            from rerankd.engines.openai.settings import ENV_PREFIX as OPENAI_PREFIX
            from rerankd.engines.openai.settings import OpenAISettings

            openai = {OPENAI_PREFIX + f.upper() for f in [*OpenAISettings.__dataclass_fields__, "model"]}
            if name in openai:
                continue
            known = known | openai
        raise ValueError(f"unknown environment variable {name}{_suggest(name, known)} (see docs/settings.md)")


def check_toml_keys(data: Mapping[str, Any], path: str, settings: Iterable[str]) -> None:
    """Raise ``ValueError`` for a top-level key of the TOML file at ``path`` not in ``settings``."""
    known = set(settings)
    for key in sorted(data):
        if key not in known:
            raise ValueError(f"{path}: unknown setting {key!r}{_suggest(key, known)}")


def check_delays(value: list[float]) -> list[float]:
    """``webhook_retry_schedule_s`` if no delay is negative."""
    if any(d < 0 for d in value):
        raise ValueError("webhook_retry_schedule_s: delays must be >= 0")
    return value


def split_commas(value: Any) -> Any:
    """A comma-separated environment value as a list of its non-empty parts (others unchanged)."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


def check_optional_device(value: str | None) -> str | None:
    """The ``device`` setting, checked (``None``: unset)."""
    from rerankd.engines.devices import check_device

    return None if value is None else check_device(value)


def check_optional_dtype(value: str | None) -> str | None:
    """The ``dtype`` setting, checked (``None``: unset)."""
    from rerankd.engines.devices import check_dtype

    return None if value is None else check_dtype(value)


def check_file_exists(value: Path | None) -> Path | None:
    """``api_keys_file`` if it is unset or a file."""
    if value is not None and not value.is_file():
        raise ValueError(f"API keys file {str(value)!r} does not exist")
    return value


def parse_api_keys(api_keys: str | None, api_keys_file: Path | None) -> dict[str, str]:
    """``{key: name}`` from ``name:key`` entries (comma-separated, and lines of the file)."""
    entries: list[tuple[str, str]] = []
    if api_keys:
        for i, part in enumerate(p.strip() for p in api_keys.split(",")):
            if part:
                entries.append((f"RERANKD_API_KEYS entry {i + 1}", part))
    if api_keys_file is not None:
        for n, line in enumerate(api_keys_file.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((f"{api_keys_file}:{n}", line))
    keys: dict[str, str] = {}
    for where, entry in entries:
        name, sep, key = entry.partition(":")
        if not sep or not name.strip() or not key.strip():
            raise ValueError(f"{where}: expected name:key")
        keys[key.strip()] = name.strip()
    return keys


def check_metrics_key(metrics_key: str | None, api_keys: Mapping[str, str]) -> None:
    """``RERANKD_METRICS_KEY`` must be non-blank and no tenant's API key (which would then see every tenant)."""
    if metrics_key is None:
        return
    if not metrics_key.strip():
        raise ValueError("RERANKD_METRICS_KEY is blank; unset it or give it a key")
    if metrics_key.strip() in api_keys:
        raise ValueError(
            f"RERANKD_METRICS_KEY is also the API key of {api_keys[metrics_key.strip()]!r}; use another key"
        )


def shown(default: str) -> dict[str, Any]:
    """A field's ``json_schema_extra`` naming its default in words (docs/settings.md)."""
    return {"shown_default": default}


def interactive_slots(setting: int | None, concurrency: int) -> int:
    """The slots of a worker that batch jobs never take: ``setting``, or 1 (0 when the worker runs one
    job at a time, so that batches still run).  At least one slot must stay for batches."""
    if setting is None:
        return 1 if concurrency > 1 else 0
    if setting >= concurrency:
        raise ValueError(
            f"RERANKD_INTERACTIVE_SLOTS={setting} must be below RERANKD_WORKER_CONCURRENCY={concurrency} "
            "(batch jobs need at least one slot)"
        )
    return setting
