"""Total parsing of generated permutations.

Whatever a model writes -- prose, ``</think>`` blocks, superscript or full-width
digits, repeated or out-of-range ids, nothing at all -- :func:`parse_permutation`
returns a permutation of ``range(n)`` and says what it had to repair.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

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


def parse_permutation(text: str, n: int, kind: IdentifierKind = "numeric") -> ParsedPermutation:
    """Parse a generated ranking of ``n`` identifiers into a permutation of ``range(n)``.

    Ids outside ``1..n`` and repeats are dropped; ids never mentioned are appended in
    their original order.  Each kind of repair is listed once in ``repairs``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    repairs: list[str] = []
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
