"""Engine options from the command line (``-e key=value``) and settings, validated per engine.

Every engine kind accepts the keyword settings of its loader (``HFEngine.load``,
``VLLMEngine.load``, :class:`~rerankd.engines.openai.OpenAISettings`); an unknown key is an
error naming the key and listing the accepted ones, and a value is converted to the setting's
type (``-e max_batch_size=16``) or refused with a message naming the key.  ``device`` and
``dtype`` get their own checks (:func:`check_device`, :func:`check_dtype`).  Torch-free.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from rerankd.engines.devices import check_device, check_dtype
from rerankd.extras import require

__all__ = [
    "accepted_options",
    "parse_option_pairs",
    "parse_options_text",
    "validate_class_options",
    "validate_engine_options",
    "validate_loader_options",
]

_CHECKS: dict[str, Callable[[str], str]] = {"device": check_device, "dtype": check_dtype}


def parse_option_pairs(pairs: Iterable[str], flag: str = "-e") -> dict[str, str]:
    """``["key=value", ...]`` as a dict (values stay strings; see :func:`validate_engine_options`)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        out[key] = value.strip()
    return out


def parse_options_text(text: str, name: str = "RERANKD_ENGINE_OPTIONS") -> dict[str, Any]:
    """A JSON object, or ``key=value,key=value`` (values stay strings); empty text: ``{}``."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a JSON object or key=value,key=value")
        return value
    return parse_option_pairs((p for p in text.split(",") if p.strip()), name)


def _loader(kind: str) -> Callable[..., Any] | None:
    """The callable whose keyword parameters are the options of engine ``kind``."""
    if kind == "hf":
        require("hf", "the hf engine")
        from rerankd.engines.hf.engine import HFEngine

        return HFEngine.load
    if kind == "vllm":
        try:
            from rerankd.engines.vllm.engine import VLLMEngine
        except ImportError:  # the loader reports a missing vLLM itself
            return None
        return VLLMEngine.load
    if kind == "cross_encoder":
        require("hf", "the cross_encoder engine")
        from rerankd.engines.cross_encoder.engine import CrossEncoderEngine

        return CrossEncoderEngine.load
    return None


def accepted_options(kind: str) -> dict[str, Any]:
    """``{option: type hint}`` of engine ``kind`` (``hf``, ``vllm``, ``openai``)."""
    if kind == "openai":
        require("openai", "the openai engine")
        from rerankd.engines.openai.settings import OpenAISettings

        hints = typing.get_type_hints(OpenAISettings)
        return {f.name: hints[f.name] for f in dataclasses.fields(OpenAISettings)}
    loader = _loader(kind)
    if loader is None:
        return {}
    return _signature_options(loader) or {}


def _signature_options(loader: Callable[..., Any]) -> dict[str, Any] | None:
    """Keyword parameters of ``loader`` but ``model`` (``None``: it takes ``**kwargs``)."""
    sig = inspect.signature(loader)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    try:
        hints = typing.get_type_hints(loader)
    except (NameError, TypeError):  # e.g. a return annotation naming a local class
        hints = {}
    names = [
        name
        for name, p in sig.parameters.items()
        if name not in ("self", "cls", "model") and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    return {name: hints.get(name) or _hint(loader, sig.parameters[name].annotation) for name in names}


def _hint(loader: Callable[..., Any], annotation: Any) -> Any:
    """One parameter's annotation, evaluated in the loader's module when it is a string."""
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, dict(getattr(loader, "__globals__", {})))
    except Exception:
        return Any


def _convert(key: str, value: Any, hint: Any) -> Any:
    if key in _CHECKS and isinstance(value, str):
        return _CHECKS[key](value)
    adapter: TypeAdapter[Any] = TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    try:
        return adapter.validate_python(value)
    except ValidationError as first:
        if isinstance(value, str):
            try:
                return adapter.validate_python(json.loads(value))
            except (json.JSONDecodeError, ValidationError):
                pass
        msg = first.errors()[0]["msg"]
        raise ValueError(f"engine option {key}={value!r} is not valid: {msg}") from None


def validate_loader_options(
    name: str, accepted: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """``options`` checked against ``accepted`` (``None``: anything goes) and converted."""
    if accepted is None:
        return dict(options)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise ValueError(
            f"unknown engine option{'s' if len(unknown) > 1 else ''} {keys} for engine {name!r}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return {k: _convert(k, v, accepted[k]) for k, v in options.items()}


def validate_engine_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for engine ``kind``, converted to the settings' types (see the module docstring)."""
    if kind == "openai" or _loader(kind) is not None:
        return validate_loader_options(kind, accepted_options(kind), options)
    return dict(options)


def validate_class_options(cls: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for a dotted ``module:Class`` engine, against ``Class.load`` (or ``Class``)."""
    loader = getattr(cls, "load", None) or cls
    return validate_loader_options(getattr(cls, "__name__", str(cls)), _signature_options(loader), options)
