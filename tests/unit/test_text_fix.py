"""``fix_text`` returns the text it has nothing to fix at once, and otherwise what ftfy returns."""

from __future__ import annotations

import random

import pytest

from rerankd.prompts import text

ftfy = pytest.importorskip("ftfy")

PLAIN = [
    "",
    "Passage 3: a short text about European cities, their rivers, bridges and history.",
    "He said \"hello\" -- and left; it's 5 o'clock (roughly) [1] {x} <b>bold</b> a<b",
    "tab\tseparated\nand two\nlines\n",
    "~`!@#$%^*()_+-=|\\:;'<>,.?/",
]
TO_FIX = [
    "fish &amp; chips",  # an HTML entity
    "caf\u00c3\u00a9",  # mojibake of cafe with an acute accent
    "line\r\nbreak",
    "bell\x07 and escape \x1b[31mred\x1b[0m",
    "\u201ccurly\u201d quotes",
    "\ufb01ne ligature",
]


@pytest.mark.parametrize("s", PLAIN + TO_FIX)
def test_fix_text_is_ftfy(s: str) -> None:
    assert text.fix_text(s) == ftfy.fix_text(s)


def test_the_shortcut_takes_only_text_ftfy_leaves_as_it_is() -> None:
    assert all(text._AS_IS.fullmatch(s) for s in PLAIN)
    assert not any(text._AS_IS.fullmatch(s) for s in TO_FIX)
    alphabet = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "&"] + ["\t", "\n"]
    rng = random.Random(7)
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert text._AS_IS.fullmatch(s) and ftfy.fix_text(s) == s
