"""Which tokens spell FIRST's identifiers, and how the engine's next-token log-probs combine.

FIRST ranks a window by how likely the model is to start its answer with each identifier
``[A``, ``[B``, ... Two rules (``FirstConfig.identifiers``):

``as_written`` (the default): the probability that the answer starts with ``"[" + letter`` as
the model's tokenizer writes it after the prompt.  Byte-level BPE tokenizers of the Qwen2/2.5/3
and Llama-3 families merge most ``[X`` into one token: that token's log-probability is read at
the answer start (no ``[`` appended).  A letter written ``[`` then ``X`` scores
``log P("[") + log P(X | "[")``, the second factor read after the prompt with ``[`` appended.
Both prompts go to the engine in one ``next_token_logprobs`` call (the second costs one token
on an engine that reuses the shared prefix).  A tokenizer that merges no letter gets
``after_bracket``'s single pass: the common ``log P("[")`` would order nothing.

``after_bracket`` (FIRST as published, rank_llm): ``[`` is appended to the prompt and each
letter is read as the token the model writes after a ``[`` token: what tokenising
``prompt + "[" + letter`` adds to ``prompt + "["``.  Where the tokenizer merges ``[`` with the
letter there is no such split to read, and the letter's own token is the one it adds after a
sentinel character (never ``encode(letter)``: SentencePiece tokenizers with a dummy prefix
encode a lone ``"A"`` as ``"▁A"``, a token the model does not write after ``[``).

Merges are found by tokenising the prompt's tail, never from the model's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rerankd.prompts import identifier
from rerankd.types import IdentifierRule, Tokenizer

__all__ = [
    "OPENING",
    "IdentifierTokenError",
    "IdentifierTokens",
    "identifier_token_ids",
    "plan_identifiers",
]

OPENING = "["
"""The first character of every identifier (``[A]``)."""

SENTINELS = ("\n", "0", "|")
"""Characters that merge with no letter in common tokenizers; a letter's own token is what
tokenising ``sentinel + letter`` adds to ``sentinel`` (the first sentinel that gives one token)."""


class IdentifierTokenError(ValueError):
    """An identifier cannot be read as one token (after ``[``, or merged with it)."""


def _added(tokenizer: Tokenizer, base: str, text: str) -> list[int] | None:
    """The tokens that ``base + text`` adds to the tokens of ``base``, or None when the two
    tokenisations differ before ``text`` (``text`` merges with the end of ``base``)."""
    head = tokenizer.encode(base)
    full = tokenizer.encode(base + text)
    return full[len(head) :] if full[: len(head)] == head else None


def _letter_alone(tokenizer: Tokenizer, letter: str) -> list[int]:
    """The token(s) of ``letter`` with no space before it and merged with nothing."""
    found: list[int] = []
    for sentinel in SENTINELS:
        added = _added(tokenizer, sentinel, letter)
        if added is not None and len(added) == 1:
            return added
        found = found or (added or [])
    return found


def identifier_token_ids(tokenizer: Tokenizer, count: int, prompt: str = "") -> list[int]:
    """Token ids of the letters ``A..`` (``count`` of them) as the model writes them after a
    ``[`` token at the end of ``prompt`` (the ``after_bracket`` rule; see the module docstring)."""
    ids: list[int] = []
    for i in range(count):
        letter = identifier(i, "alpha")
        added = _added(tokenizer, prompt + OPENING, letter)
        what = f"adds {len(added or [])} tokens {added} after '['"
        if added is None:  # "[" + letter merge: read the letter's own token
            added = _letter_alone(tokenizer, letter)
            what = f"is written as {len(added)} tokens {added} after a sentinel"
        if len(added) != 1:
            raise IdentifierTokenError(
                f"FIRST needs every identifier to be one token, but {letter!r} {what} with this "
                "tokenizer; use a model whose tokenizer has single-token capital letters"
            )
        ids.append(added[0])
    if len(set(ids)) != len(ids):
        raise IdentifierTokenError(f"identifier letters share token ids: {ids}")
    return ids


@dataclass(frozen=True)
class IdentifierTokens:
    """The tokens read for the identifiers ``A..`` of a window, and how they combine.

    ``after_bracket``: one prompt, ``prompt + "["``; letter ``i`` scores ``after[i]``'s
    log-probability.  Otherwise letter ``i`` is the merged token ``start[i]`` read at the answer
    start, or (``start[i] is None``) ``bracket`` there plus ``after[i]`` after ``prompt + "["``.
    """

    rule: IdentifierRule
    start: tuple[int | None, ...]
    after: tuple[int | None, ...]
    bracket: int | None = None
    note: str | None = None
    """Why the rule asked for was not used (for the result's warnings), else None."""

    @property
    def after_bracket(self) -> bool:
        return self.rule == "after_bracket"

    def request(self, prompt: str, size: int) -> tuple[list[str], list[int]]:
        """The prompts and token ids of the one ``next_token_logprobs`` call for a window of
        ``size`` identifiers; ``prompt`` is the rendered prompt up to the answer start."""
        if self.after_bracket:
            return [prompt + OPENING], [_id(self.after[i]) for i in range(size)]
        merged = [t for t in self.start[:size] if t is not None]
        split = [_id(self.after[i]) for i in range(size) if self.start[i] is None]
        if not split:
            return [prompt], merged
        return [prompt, prompt + OPENING], [*merged, _id(self.bracket), *split]

    def combine(self, rows: Sequence[Sequence[float]], size: int) -> list[float]:
        """Each identifier's log-probability from the rows answered to :meth:`request`."""
        _, ids = self.request("", size)
        if self.after_bracket:
            return list(rows[0])
        at_start = dict(zip(ids, rows[0], strict=True))
        after = dict(zip(ids, rows[1], strict=True)) if len(rows) > 1 else {}
        out = []
        for i in range(size):
            merged = self.start[i]
            if merged is not None:
                out.append(at_start[merged])
            else:
                out.append(at_start[_id(self.bracket)] + after[_id(self.after[i])])
        return out


def _id(token: int | None) -> int:
    assert token is not None
    return token


def plan_identifiers(tokenizer: Tokenizer, count: int, tail: str, rule: IdentifierRule) -> IdentifierTokens:
    """How the first ``count`` identifiers are read after a prompt ending in ``tail`` (its last
    characters; tokenisation is local), under ``rule``.

    ``as_written`` falls back to ``after_bracket`` (with a ``note``) when some identifier is
    written neither as one token nor as ``[`` + one token after this prompt (the prompt's last
    token merges with ``[``), and is ``after_bracket`` when no letter merges with ``[``.
    """
    if rule == "after_bracket":
        return _after_bracket(tokenizer, count, tail)
    bracket = _added(tokenizer, tail, OPENING)
    bracket_ok = bracket is not None and len(bracket) == 1
    start: list[int | None] = []
    after: list[int | None] = []
    odd: list[str] = []
    for i in range(count):
        letter = identifier(i, "alpha")
        whole = _added(tokenizer, tail, OPENING + letter)
        split = _added(tokenizer, tail + OPENING, letter) if bracket_ok else None
        if whole is not None and len(whole) == 1:
            start.append(whole[0])
            after.append(None)
        elif bracket_ok and split is not None and len(split) == 1:
            start.append(None)
            after.append(split[0])
        else:
            odd.append(OPENING + letter)
    if odd:
        plan = _after_bracket(tokenizer, count, tail)
        note = (
            f"identifiers='as_written': {', '.join(odd)} are written neither as one token nor as '[' "
            "plus one token after this prompt; read after '[' instead (identifiers='after_bracket')"
        )
        return IdentifierTokens(rule=plan.rule, start=plan.start, after=plan.after, note=note)
    if all(t is None for t in start):  # no letter merges: P("[") is common to all
        return IdentifierTokens(rule="after_bracket", start=tuple(start), after=tuple(after))
    merged = [t for t in start if t is not None]
    split_ids = [t for t in after if t is not None]
    if len(set(merged)) != len(merged) or len(set(split_ids)) != len(split_ids):
        raise IdentifierTokenError(f"identifiers share token ids: merged {merged}, after '[' {split_ids}")
    return IdentifierTokens(
        rule="as_written", start=tuple(start), after=tuple(after), bracket=bracket[0] if bracket else None
    )


def _after_bracket(tokenizer: Tokenizer, count: int, tail: str) -> IdentifierTokens:
    ids = identifier_token_ids(tokenizer, count, tail)
    return IdentifierTokens(rule="after_bracket", start=(None,) * count, after=tuple(ids))
