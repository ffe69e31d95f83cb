"""Settings of the openai engine (``RERANKD_OPENAI_<NAME>`` or engine options) and its tokenizer.

No ``openai`` import here: the settings check (:mod:`rerankd.config`) reads the names without the SDK.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.openai.retry import RetryPolicy
from rerankd.types import Tokenizer

__all__ = ["DEFAULT_BASE_URL", "ENV_PREFIX", "TIKTOKEN_CONTEXT_SIZE", "OpenAISettings", "build_tokenizer"]

ENV_PREFIX = "RERANKD_OPENAI_"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
TIKTOKEN_CONTEXT_SIZE = 128_000
"""Context size assumed with a tiktoken tokenizer when neither settings nor server tell it."""


@dataclass(frozen=True)
class OpenAISettings:
    """Settings of the ``openai`` engine; each may come from ``RERANKD_OPENAI_<NAME>``."""

    base_url: str = DEFAULT_BASE_URL
    """Server root including ``/v1`` (``http://127.0.0.1:8000/v1`` for ``vllm serve``)."""
    api_key: str = "EMPTY"
    """Bearer key (``RERANKD_OPENAI_API_KEY``, else ``OPENAI_API_KEY``); local servers ignore it."""
    tokenizer: str | None = None
    """Token budgeting: ``tiktoken:<encoding>`` (``o200k_base``, ``cl100k_base``) or a bundled
    model name, local folder or hub id whose Hugging Face tokenizer is used.  ``None``: the
    model's own HF tokenizer when ``model`` is a bundled name or a local folder, else
    ``tiktoken:o200k_base`` (the encoding of OpenAI's current chat models)."""
    context_size: int | None = None
    """Prompt + output tokens the server accepts.  ``None``: the server's ``max_model_len``
    (vLLM reports it in ``/models``), else the HF tokenizer's model config, else
    :data:`TIKTOKEN_CONTEXT_SIZE`."""
    supports_completions_logprobs: bool | None = None
    """Whether ``/completions`` returns logprobs (FIRST); ``None``: find out on first use."""
    top_logprobs: int = 20
    """``logprobs`` asked of ``/completions`` (vLLM's default cap is 20; OpenAI's is 5)."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Name of the output budget in chat requests (OpenAI's o-series want ``max_completion_tokens``)."""
    max_concurrent_requests: int = 64
    """Requests in flight at once per event loop (the server batches them)."""
    max_attempts: int = 6
    """Attempts per request, the first included."""
    deadline_s: float = 1800.0
    """Total time per request, attempts and waits included."""
    request_timeout_s: float = 600.0
    """Cap on one attempt (the OpenAI SDK's default).  It includes the time the request waits in
    the server's queue: a shorter cap makes a busy slow server (8 long prompts on 2 CPU cores)
    abandon and redo work it was about to finish."""
    initial_backoff_s: float = 0.5
    """Base of the first retry wait (then doubling, jittered)."""
    max_backoff_s: float = 30.0
    """Cap on one retry wait."""

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> OpenAISettings:
        """Settings from ``overrides`` (``None`` values ignored), else the environment, else defaults."""
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown openai engine setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        for f in dataclasses.fields(cls):
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None and f.name == "api_key":
                raw = env.get("OPENAI_API_KEY")
            if raw is not None and raw != "":
                values[f.name] = _parse_env(ENV_PREFIX + f.name.upper(), raw, hints[f.name])
        settings = cls(**values)
        settings.retry_policy()  # validates the retry numbers
        if settings.top_logprobs < 1 or settings.max_concurrent_requests < 1:
            raise ValueError("top_logprobs and max_concurrent_requests must be at least 1")
        return settings

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            deadline_s=self.deadline_s,
            initial_backoff_s=self.initial_backoff_s,
            max_backoff_s=self.max_backoff_s,
            attempt_timeout_s=self.request_timeout_s,
        )


def _parse_env(name: str, raw: str, hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
    try:
        if base is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {base.__name__}") from None
    return raw


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(spec: str | None, model: str) -> Tokenizer:
    """The budgeting tokenizer for setting ``tokenizer=spec`` (see :class:`OpenAISettings`)."""
    from rerankd.models.registry import REGISTRY

    if spec is None:
        local = model in REGISTRY or model.lower() in REGISTRY or os.path.isdir(os.path.expanduser(model))
        spec = model if local else "tiktoken:o200k_base"
    if spec.startswith("tiktoken:"):
        from rerankd.prompts.tiktoken_tokenizer import TiktokenTokenizer

        return TiktokenTokenizer(spec.removeprefix("tiktoken:"))
    from transformers import AutoTokenizer

    from rerankd.models.provision import resolve_model

    return HFTokenizer(AutoTokenizer.from_pretrained(resolve_model(spec)))


def _tokenizer_context_size(tokenizer: Tokenizer, spec: str | None, model: str) -> int | None:
    from rerankd.models.registry import REGISTRY

    if not isinstance(tokenizer, HFTokenizer):
        return None
    name = spec or model
    reg = REGISTRY.get(name) or REGISTRY.get(name.lower())
    if reg is not None:
        return reg.context_size
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(tokenizer.hf.name_or_path)
        native = getattr(config, "max_position_embeddings", None)
    except (OSError, ValueError):
        return None
    return int(native) if native else None


# --------------------------------------------------------------------------- engine
