import itertools

import pytest

from rerankd.strategies.common import rank_score, window_spans


@pytest.mark.parametrize(
    ("n", "calls"),
    [(100, 9), (7, 1), (25, 2), (20, 1), (21, 2), (30, 2), (1, 1), (0, 0)],
)
def test_window_count(n: int, calls: int) -> None:
    assert len(window_spans(n, 20, 10)) == calls


def test_back_to_front_and_cover_everything() -> None:
    spans = window_spans(100, 20, 10)
    assert spans[0] == (80, 100) and spans[-1] == (0, 20)
    assert [s for s, _ in spans] == [80, 70, 60, 50, 40, 30, 20, 10, 0]
    for n in range(1, 120):
        for ws, st in [(20, 10), (4, 2), (5, 5), (3, 1), (20, 20)]:
            spans = window_spans(n, ws, st)
            covered = set()
            for s, e in spans:
                assert 0 <= s < e <= n and e - s <= ws
                covered.update(range(s, e))
            assert covered == set(range(n))
            assert spans[-1][0] == 0


def test_rank_score_monotone() -> None:
    scores = [rank_score(r, 10) for r in range(1, 11)]
    assert scores[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(scores))
