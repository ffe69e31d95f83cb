"""The named prompt templates: ``get_template(name)``."""

from __future__ import annotations

from rerankd.prompts.base import (
    IdentifierKind,
    Passage,
    PromptTemplate,
    identifier,
    permutation_string,
)
from rerankd.prompts.rank_gpt import RankGPTTemplate
from rerankd.prompts.rank_llm import (
    FIRST,
    FULLRANK,
    RANK_ZEPHYR,
    RANK_ZEPHYR_ALPHA,
    RANK_ZEPHYR_LEGACY,
    SingleTurnTemplate,
)

__all__ = [
    "IdentifierKind",
    "Passage",
    "PromptTemplate",
    "RankGPTTemplate",
    "SingleTurnTemplate",
    "get_template",
    "identifier",
    "permutation_string",
    "template_names",
]

_TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        RankGPTTemplate(),
        RANK_ZEPHYR,
        RANK_ZEPHYR_LEGACY,
        RANK_ZEPHYR_ALPHA,
        FIRST,
        FULLRANK,
    )
}


def template_names() -> list[str]:
    """Names accepted by :func:`get_template`, sorted."""
    return sorted(_TEMPLATES)


def get_template(name: str) -> PromptTemplate:
    """The template registered as ``name``; unknown names raise ``ValueError`` listing the known ones."""
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known templates: {', '.join(template_names())}") from None
