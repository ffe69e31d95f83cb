"""Passage text preprocessing shared by the templates."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable

from rerankd.types import Tokenizer

logger = logging.getLogger(__name__)

_BRACKET_NUMBER = re.compile(r"\[(\d+)\]")


def replace_bracket_numbers(s: str) -> str:
    """``[12]`` -> ``(12)``, so passages and queries cannot fake a numeric identifier (rank_llm)."""
    return _BRACKET_NUMBER.sub(r"(\1)", s)


_WORD = re.compile(r"\S+")


def cut_words(text: str, max_words: int, *, keep_spacing: bool = False) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``.

    By default joined by single spaces: RankGPT's and rank_llm's
    ``" ".join(content.split()[: int(max_length)])``, which also collapses every run of
    whitespace (newlines included) into one space.  ``keep_spacing=True`` keeps the text as
    written up to the end of the last kept word (ICR's passages).
    """
    n = max(0, int(max_words))
    if not keep_spacing:
        return " ".join(text.split()[:n])
    if n == 0:
        return ""
    for i, match in enumerate(_WORD.finditer(text)):
        if i + 1 == n:
            return text[: match.end()]
    return text


def cut_tokens(text: str, max_tokens: int, tokenizer: Tokenizer) -> str:
    """``text`` cut to its first ``max_tokens`` tokens; unchanged when it is not longer.

    A cut that ends inside a multi-byte character drops the partial character (the
    ``U+FFFD`` a byte-level decoder puts there) and trailing whitespace.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    ids = tokenizer.encode(text)
    if len(ids) <= max_tokens:
        return text
    if max_tokens == 0:
        return ""
    return tokenizer.decode(ids[:max_tokens]).rstrip("\ufffd").rstrip()


def _load_fix_text() -> Callable[[str], str]:
    try:
        from ftfy import fix_text as ftfy_fix_text
    except ImportError:
        return _fallback_fix_text
    fixer: Callable[[str], str] = ftfy_fix_text
    return fixer


def _fallback_fix_text(text: str) -> str:
    # Without ftfy only NFC normalization is applied (ftfy's last step).  ASCII text is
    # unaffected either way; mojibake, curly quotes, HTML entities, ligatures and
    # full-width characters are what ftfy would additionally change.
    return unicodedata.normalize("NFC", text)


_fix_text = _load_fix_text()
FTFY_AVAILABLE = _fix_text is not _fallback_fix_text
if not FTFY_AVAILABLE:
    logger.debug("ftfy is not installed: rank_llm passage cleaning falls back to NFC normalization")


_AS_IS = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")
"""Text that :func:`fix_text` returns unchanged: printable ASCII without ``&`` (which may start an
HTML entity), tabs and newlines has no mojibake, entity, control character or line break to fix.
Checked first because ftfy takes ~30 us a passage (0.6 ms of a 20-passage job, on the worker's loop)."""


def fix_text(text: str) -> str:
    """rank_llm's ``ftfy.fix_text`` on passage content (NFC-only fallback when ftfy is absent)."""
    if _AS_IS.fullmatch(text):
        return text
    return _fix_text(text)
