"""Listwise ranking prompt templates, rendered like the published ones, and token budgeting."""

from rerankd.prompts.base import IdentifierKind, Passage, PromptTemplate, identifier, permutation_string
from rerankd.prompts.budget import FittedPrompt, PromptTooLongError, fit_prompt
from rerankd.prompts.templates import get_template, template_names

__all__ = [
    "FittedPrompt",
    "IdentifierKind",
    "Passage",
    "PromptTemplate",
    "PromptTooLongError",
    "fit_prompt",
    "get_template",
    "identifier",
    "permutation_string",
    "template_names",
]
