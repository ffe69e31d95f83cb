from rerankd import Reranker
from tests.support.scripted_engine import ScriptedEngine


def test_one_call_api_with_strings_and_dicts() -> None:
    with Reranker(strategy={"name": "sliding_window", "window_size": 4, "stride": 2}, engine=ScriptedEngine()) as rr:
        res = rr.rerank("q", ["a rel=1", "b rel=3", "c rel=2"])
        assert res.docids == ["1", "2", "0"]
        res2 = rr.rerank("q", [{"docid": "x", "text": "t rel=1"}, {"docid": "y", "text": "t rel=5"}], top_n=1)
        assert res2.docids == ["y"]
