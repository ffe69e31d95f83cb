import json
from pathlib import Path

import pytest

from rerankd.formats.inputs import InputFormatError, read_queries


def test_rank_llm_request_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "req.jsonl"
    line = {
        "query": {"text": "cats", "qid": 7},
        "candidates": [
            {"docid": "a", "score": 2.0, "doc": {"contents": "about cats", "title": "Cats"}},
            {"docid": 9, "score": 1.0, "doc": {"segment": "about dogs"}},
        ],
    }
    f.write_text(json.dumps(line) + "\n")
    [item] = list(read_queries(f))
    assert item.query.qid == "7" and item.query.text == "cats"
    assert [(c.docid, c.title, c.text) for c in item.candidates] == [
        ("a", "Cats", "about cats"),
        ("9", None, "about dogs"),
    ]


def test_trec_run_topics_collection(tmp_path: Path) -> None:
    run, topics, coll = tmp_path / "run", tmp_path / "topics.tsv", tmp_path / "coll.tsv"
    run.write_text("q1 Q0 d2 2 5.0 bm25\nq1 Q0 d1 1 9.0 bm25\n")
    topics.write_text("q1\twhat is a cat\n")
    coll.write_text("d1\tcats purr\nd2\tCats\tTitled text\n")
    [item] = list(read_queries(run, topics=topics, collection=coll))
    assert [c.docid for c in item.candidates] == ["d1", "d2"]
    assert item.candidates[1].title == "Cats" and item.candidates[1].text == "Titled text"
    coll.write_text("d1\tcats purr\n")
    with pytest.raises(InputFormatError, match="no text for docid 'd2'"):
        list(read_queries(run, topics=topics, collection=coll))
    run.write_text("q1 Q0 d1 1\n")
    with pytest.raises(InputFormatError, match=r"run:1: expected 6 columns"):
        list(read_queries(run, topics=topics, collection=coll))
    with pytest.raises(InputFormatError, match="needs both --topics and --collection"):
        list(read_queries(run, topics=topics))


def test_missing_file_and_empty_candidates(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="file not found"):
        list(read_queries(tmp_path / "nope.jsonl"))
    f = tmp_path / "q.jsonl"
    f.write_text('{"qid": "1", "query": "q", "candidates": []}\n')
    with pytest.raises(InputFormatError, match=r"q\.jsonl:1: query has no candidates"):
        list(read_queries(f))
