"""Total parsing of generated permutations.

Whatever a model writes -- prose, ``</think>`` blocks, superscript or full-width
digits, repeated or out-of-range ids, nothing at all -- :func:`parse_permutation`
returns a permutation of ``range(n)`` and says what it had to repair.

Two rules pick the identifiers out of the text (:data:`ParseRule`):

* ``bracketed`` (default): ``[3]`` / ``[C]`` in order of appearance; bare ``3`` / ``C`` only
  when nothing is bracketed.  Numbers in prose (``3000 psi``, ``1.``) do not count when the
  model also wrote bracketed ids.
* ``rank_llm``: the published RankGPT / rank_llm 0.26 rule, for results identical to theirs:
  text after the last ``</think>``, look-alike digits (superscript, subscript, circled,
  full-width) mapped to ASCII, then every run of digits is an identifier, numbers in prose
  included; for alphabetic ids every letter stands for its position in the alphabet, and
  adjacent letters join into one number as they do there.  Where rank_llm gives up on a
  response (a digit Python cannot read as a number) the window keeps its order.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from rerankd.types import ParseRule

IdentifierKind = Literal["numeric", "alpha"]

_THINK_END = re.compile(r"</think\s*>", re.IGNORECASE)
_BRACKETED_NUM = re.compile(r"\[\s*(\d+)\s*\]")
_BARE_NUM = re.compile(r"\d+")
_BRACKETED_ALPHA = re.compile(r"\[\s*([A-Za-z])\s*\]")
_BARE_ALPHA = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


@dataclass
class ParsedPermutation:
    """``order[k]`` is the 0-based window position ranked ``k``-th."""

    order: list[int]
    repairs: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return bool(self.repairs)


def _normalise(text: str) -> str:
    # NFKC folds full-width digits/brackets and superscript digits to ASCII.
    text = unicodedata.normalize("NFKC", text)
    ends = list(_THINK_END.finditer(text))
    if ends:
        text = text[ends[-1].end() :]
    return text


def _look_alike_digits() -> dict[int, int]:
    """rank_llm's table: superscript, subscript, circled 1-9, negative circled 1-9, full-width, 🄀-🄉."""
    table: dict[int, int] = {}
    superscripts = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
    for digit, ch in enumerate(superscripts):
        table[ord(ch)] = ord("0") + digit
    for digit in range(10):
        table[0x2080 + digit] = ord("0") + digit  # subscripts
        table[0xFF10 + digit] = ord("0") + digit  # full-width
        table[0x1F100 + digit] = ord("0") + digit  # digit full stop / comma
    for digit in range(1, 10):
        table[0x2460 + digit - 1] = ord("0") + digit  # circled
        table[0x2776 + digit - 1] = ord("0") + digit  # dingbat negative circled
    return table


_LOOK_ALIKE_DIGITS = _look_alike_digits()
_RANK_LLM_THINK_END = "</think>"


def _extract_rank_llm(text: str, kind: IdentifierKind) -> list[int] | None:
    """1-based identifiers by rank_llm's rule; ``None`` where rank_llm keeps the window order."""
    if _RANK_LLM_THINK_END in text:
        text = text.split(_RANK_LLM_THINK_END)[-1].strip()
    text = text.translate(_LOOK_ALIKE_DIGITS)
    if kind == "alpha":
        spaced = "".join(str(ord(c) - ord("A") + 1) if c.isalpha() else " " for c in text)
    else:
        spaced = "".join(c if c.isdigit() else " " for c in text)
    try:
        return [int(x) for x in spaced.split()]
    except ValueError:  # isdigit() but not a decimal digit, e.g. U+24EA
        return None


def _extract(text: str, kind: IdentifierKind, repairs: list[str]) -> list[int]:
    """1-based identifiers in the order they appear."""
    if kind == "numeric":
        found = _BRACKETED_NUM.findall(text)
        if not found:
            found = _BARE_NUM.findall(text)
            if found:
                repairs.append("identifiers without brackets")
        return [int(x) for x in found]
    found = _BRACKETED_ALPHA.findall(text)
    if not found:
        found = _BARE_ALPHA.findall(text)
        if found:
            repairs.append("identifiers without brackets")
    return [ord(x.upper()) - ord("A") + 1 for x in found]


def parse_permutation(
    text: str, n: int, kind: IdentifierKind = "numeric", rule: ParseRule = "bracketed"
) -> ParsedPermutation:
    """Parse a generated ranking of ``n`` identifiers into a permutation of ``range(n)``.

    ``rule`` picks the identifiers out of the text (see the module docstring).  Ids outside
    ``1..n`` and repeats are dropped; ids never mentioned are appended in their original
    order.  Each kind of repair is listed once in ``repairs``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    repairs: list[str] = []
    if rule == "rank_llm":
        found = _extract_rank_llm(text or "", kind)
        if found is None:
            return ParsedPermutation(order=list(range(n)), repairs=["unreadable digits: window order kept"])
        ids = found
    else:
        ids = _extract(_normalise(text or ""), kind, repairs)
    if not text or not text.strip():
        repairs.append("empty output")
    elif not ids:
        repairs.append("no identifiers found")
    order: list[int] = []
    seen: set[int] = set()
    out_of_range = duplicates = 0
    for ident in ids:
        pos = ident - 1
        if not 0 <= pos < n:
            out_of_range += 1
        elif pos in seen:
            duplicates += 1
        else:
            seen.add(pos)
            order.append(pos)
    if out_of_range:
        repairs.append(f"{out_of_range} out-of-range identifier(s) dropped")
    if duplicates:
        repairs.append(f"{duplicates} duplicate identifier(s) dropped")
    missing = [i for i in range(n) if i not in seen]
    if missing and ids:
        repairs.append(f"{len(missing)} missing identifier(s) appended in original order")
    order.extend(missing)
    return ParsedPermutation(order=order, repairs=repairs)
