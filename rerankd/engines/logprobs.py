"""Next-token logprobs from a server's top-k, shared by the ``vllm`` and ``openai`` engines."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

__all__ = ["TOPK_FLOOR_GAP", "pick_logprobs"]

K = TypeVar("K", bound=Hashable)

TOPK_FLOOR_GAP = 1.0
"""Top-k fallback: a wanted token missing from the top-k gets ``min(top-k) - TOPK_FLOOR_GAP``,
strictly below every returned value (its true value is unknown but no larger than the smallest)."""


def pick_logprobs(got: Mapping[K, float], wanted: Sequence[K], *, exact: bool = False) -> list[float]:
    """The log-probabilities of ``wanted`` from one step's ``{token: logprob}``.

    ``exact``: every wanted token must be there (the server was asked for exactly them);
    otherwise missing ones get the floor ``min(got) - TOPK_FLOOR_GAP``.
    """
    if exact:
        missing = [t for t in wanted if t not in got]
        if missing:
            raise RuntimeError(f"the server returned no logprob for tokens {missing}")
        return [got[t] for t in wanted]
    if not got:
        raise RuntimeError("the server returned no logprobs")
    floor = min(got.values()) - TOPK_FLOOR_GAP
    return [got.get(t, floor) for t in wanted]
