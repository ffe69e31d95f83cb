"""The job store's Lua scripts, read from the ``.lua`` files beside this module.

A script's first line may be ``-- include: a b ...``: those shared pieces (``a.lua``, ...) are
prepended in that order, so every transition script shares one clock (``now``), one number
format (``fmt``), one metrics applier and one ``terminate``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

_INCLUDE = "-- include:"


def _read(name: str) -> str:
    return resources.files("rerankd.jobs").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def lua(name: str) -> str:
    """The source of script ``name`` with its includes resolved."""
    text = _read(name)
    first, _, rest = text.partition("\n")
    if not first.startswith(_INCLUDE):
        return text
    parts = [_read(piece) for piece in first[len(_INCLUDE) :].split()]
    return "".join(parts) + rest
