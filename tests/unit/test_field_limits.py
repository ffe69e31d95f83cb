"""Size limits of every request field (422 naming field and setting) and max_tokens_per_doc."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rerankd.api.admission import check_custom_id, check_documents, check_fields
from rerankd.api.errors import LimitError
from rerankd.config import Settings
from rerankd.strategies.truncate import truncate_documents
from rerankd.types import Candidate, ChatMessage, FeedbackRequest, Query, RerankRequest


def _req(**kw: object) -> RerankRequest:
    base: dict[str, object] = {"query": Query(text="q"), "candidates": [Candidate(docid="d0", text="t")]}
    return RerankRequest(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("req", "field", "setting"),
    [
        (_req(query=Query(text="q", qid="x" * 11)), "query.qid", "RERANKD_MAX_DOCID_CHARS"),
        (_req(candidates=[Candidate(docid="d" * 11, text="t")]), "candidates[0].docid", "RERANKD_MAX_DOCID_CHARS"),
        (
            _req(candidates=[Candidate(docid="d", text="t", title="T" * 21)]),
            "candidates[0].title",
            "RERANKD_MAX_TITLE_CHARS",
        ),
        (
            _req(feedback=FeedbackRequest(query_vector=[0.0] * 9, candidate_vectors=[[0.0] * 9])),
            "feedback.query_vector",
            "RERANKD_MAX_FEEDBACK_DIMENSIONS",
        ),
        (_req(max_tokens_per_doc=31), "max_tokens_per_doc", "RERANKD_MAX_TOKENS_PER_DOC"),
    ],
)
def test_each_field_has_a_named_limit(req: RerankRequest, field: str, setting: str) -> None:
    s = Settings(max_docid_chars=10, max_title_chars=20, max_feedback_dimensions=8, max_tokens_per_doc=30)
    with pytest.raises(LimitError) as e:
        check_fields(s, req, where="line 2: ")
    assert e.value.status == 422 and e.value.field == f"line 2: {field}" and e.value.setting == setting
    assert setting in e.value.message and e.value.limit in (10, 20, 8, 30)


def test_custom_id_and_object_documents() -> None:
    s = Settings(max_docid_chars=4, max_document_chars=5)
    check_custom_id(s, "abcd")
    with pytest.raises(LimitError, match="custom_id: 5 characters exceed the limit of 4"):
        check_custom_id(s, "abcde")
    with pytest.raises(LimitError, match=r"documents\[1\].meta: 6 characters .* \(RERANKD_MAX_DOCUMENT_CHARS\)"):
        check_documents(s, ["ok", {"text": "ok", "meta": "x" * 6}])


class _CharTokenizer:
    """One token per character: a word of 10 letters is 10 tokens."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        return ""

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        return 0


def test_max_tokens_per_doc_counts_tokens_not_words() -> None:
    req = _req(
        candidates=[Candidate(docid="a", text="supercalifragilistic"), Candidate(docid="b", text="ok")],
        max_tokens_per_doc=5,
    )
    out, cut = truncate_documents(req, _CharTokenizer())
    assert [c.text for c in out.candidates] == ["super", "ok"] and cut == 1 and out.max_tokens_per_doc is None
    assert truncate_documents(_req(), _CharTokenizer()) == (_req(), 0)
