"""The job store's Lua scripts, read from the ``.lua`` files beside this module.

A script's first line may be ``-- include: a b ...``: those shared pieces (``a.lua``, ...) are
prepended in that order (recursively, each piece once), so every transition script shares one
clock (``now``), one number format (``fmt``), one metrics applier, one ``terminate`` and one
set of status counters (``counters``: ``count_move``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

_INCLUDE = "-- include:"


def _read(name: str) -> str:
    return resources.files("rerankd.jobs").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _resolve(name: str, seen: set[str]) -> str:
    text = _read(name)
    first, _, rest = text.partition("\n")
    if not first.startswith(_INCLUDE):
        return text
    parts = []
    for piece in first[len(_INCLUDE) :].split():
        if piece not in seen:
            seen.add(piece)
            parts.append(_resolve(piece, seen))
    return "".join(parts) + rest


@cache
def lua(name: str) -> str:
    """The source of script ``name`` with its includes resolved (a piece may include others;
    each piece appears once, before its first user)."""
    return _resolve(name, set())
