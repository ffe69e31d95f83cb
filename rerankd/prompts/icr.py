"""The in-context reranking (ICR) prompt of Chen et al. (ICLR 2025), on a chat template.

Wording follows ``InContextReranker._prepare_input_for_document_retrieval`` in
OSU-NLP-Group/In-Context-Reranking (``src/in_context_reranker.py``), "instruct" template with
the query last: one user turn holding (``\\n`` shown as ``|``)

    Here are some paragraphs:||[1] {title}|{text}||[2] ...||{late instruction}||Query: {query}

Passages are ``title + "\\n" + text`` (stripped; no title line without a title, as they do
for FiQA), numbered by their position in the prompt.  The OSU code writes its model's raw
chat markers around this text; here the model's own chat template renders it (so the
leading space of their ``" Here are some paragraphs:"``, which followed the user header
directly, is dropped).

The rendered prompt is split in two:

* ``context``: everything up to the end of the last passage *and* the blank-line separator
  after it.  OSU's query span starts right after that separator (their
  ``query_start_idx = prompt_length + separator_length``) and the KV cache they reuse
  for the calibration query is cropped there.  The engine encodes ``context`` on its own,
  so the cut must tokenise as in the whole prompt.  It does for Llama-3 / Qwen2 style
  pre-tokenisers (``"\\n\\n"`` then ``"Please"``), where a cut right after the passage
  would not (they glue punctuation to the newlines that follow: ``".\\n\\n"``).  GPT-2
  style ones (SmolLM2) instead split ``"\\n\\nPlease"`` as ``"\\n", "\\n", "Please"``; for
  those the cut moves to the end of the last passage, which they tokenise cleanly, and the
  separator joins the query span.  ``build_icr_prompt`` checks both cuts with the tokenizer.
* ``suffix`` / ``na_suffix``: the rest of the prompt for the real query and for the
  content-free calibration query ``"N/A"`` (late instruction, ``Query: ...``, end of turn
  and the assistant header): the query span whose attention ICR reads.

``doc_char_spans[i]`` covers ``[i+1] {passage}`` inside ``context``: OSU's document token
spans include the ``[i]`` identifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rerankd.prompts.text import cut_words
from rerankd.types import ChatMessage, Tokenizer

RetrievalType = Literal["IE", "QA"]

OPENING = "Here are some paragraphs:"
LATE_INSTRUCTIONS: dict[RetrievalType, str] = {
    # OSU: retrieval_type == "IE" (their default; used for most BEIR sets).
    "IE": "Please find information that are relevant to the following query in the paragraphs above.",
    # OSU: retrieval_type == "QA" (multi-hop QA, and TREC-COVID, FiQA, Touche, DBPedia, NQ).
    "QA": "Please answer the following question based on the information in the paragraphs above.",
}
SEPARATOR = "\n\n"
CALIBRATION_QUERY = "N/A"


@dataclass(frozen=True)
class IcrPrompt:
    """An ICR prompt split into a shared context and per-query suffixes."""

    messages: list[ChatMessage]
    """Chat messages of the real-query prompt (for token counting)."""
    na_messages: list[ChatMessage]
    """Chat messages of the calibration-query prompt."""
    context: str
    """Rendered prompt up to the separator after the last passage (included unless that cut
    tokenises differently from the whole prompt; see the module docstring)."""
    doc_char_spans: list[tuple[int, int]]
    """``[start, end)`` of each passage (``[i] title\\ntext``) in ``context``, prompt order."""
    suffix: str
    """Rest of the rendered prompt for the real query."""
    na_suffix: str
    """Rest of the rendered prompt for the calibration query."""


def truncate_words(text: str, max_words: int) -> str:
    """``text`` cut after its first ``max_words`` whitespace-separated words.

    OSU (following RankGPT) keeps ``" ".join(text.split(" ")[:300])``; this counts runs of
    non-whitespace instead, so repeated spaces and newlines do not count as words and the
    kept part is left as written (:func:`rerankd.prompts.text.cut_words` with ``keep_spacing``).
    """
    return cut_words(text, max_words, keep_spacing=True)


def format_passage(title: str | None, text: str, max_words: int | None = None) -> str:
    """One passage as OSU formats it: ``title\\ntext`` stripped (``text`` alone without a title).

    Only the text is cut to ``max_words``; the title is kept whole.
    """
    if max_words is not None:
        text = truncate_words(text, max_words)
    if title and title.strip():
        return f"{title}\n{text}".strip()
    return text.strip()


def icr_user_content(
    query: str, passages: Sequence[str], retrieval_type: RetrievalType = "IE"
) -> tuple[str, list[tuple[int, int]], int]:
    """The user turn, the spans of ``[i] passage`` in it, and where the query span starts."""
    parts = [OPENING]
    pos = len(OPENING)
    spans: list[tuple[int, int]] = []
    for i, passage in enumerate(passages, start=1):
        item = f"[{i}] {passage}"
        start = pos + len(SEPARATOR)
        spans.append((start, start + len(item)))
        parts.append(SEPARATOR + item)
        pos = start + len(item)
    query_start = pos + len(SEPARATOR)
    parts.append(f"{SEPARATOR}{LATE_INSTRUCTIONS[retrieval_type]}{SEPARATOR}Query: {query.strip()}")
    return "".join(parts), spans, query_start


def _render(
    query: str, passages: Sequence[str], tokenizer: Tokenizer, retrieval_type: RetrievalType
) -> tuple[list[ChatMessage], str, list[tuple[int, int]], int]:
    content, spans, query_start = icr_user_content(query, passages, retrieval_type)
    messages = [ChatMessage(role="user", content=content)]
    rendered = tokenizer.render_chat(messages, add_generation_prompt=True)
    at = rendered.find(content)
    if at < 0:
        raise ValueError(
            "the chat template does not reproduce the ICR user message verbatim, so passage spans "
            "cannot be located in the rendered prompt"
        )
    return messages, rendered, [(at + s, at + e) for s, e in spans], at + query_start


def _tokenises_apart(tokenizer: Tokenizer, left: str, right: str) -> bool:
    """Whether ``left`` and ``right`` encoded apart give the tokens of ``left + right``."""
    return tokenizer.encode(left) + tokenizer.encode(right) == tokenizer.encode(left + right)


def build_icr_prompt(
    query: str,
    passages: Sequence[tuple[str | None, str]],
    tokenizer: Tokenizer,
    calibration_query: str = CALIBRATION_QUERY,
    *,
    max_words_per_passage: int | None = None,
    retrieval_type: RetrievalType = "IE",
) -> IcrPrompt:
    """Render the ICR prompt for ``(title, text)`` passages, in the given (prompt) order."""
    if not passages:
        raise ValueError("ICR needs at least one passage")
    if not query.strip():
        raise ValueError("the query is empty")
    texts = [format_passage(title, text, max_words_per_passage) for title, text in passages]
    messages, rendered, spans, after_sep = _render(query, texts, tokenizer, retrieval_type)
    na_messages, na_rendered, _, na_after_sep = _render(calibration_query, texts, tokenizer, retrieval_type)
    if na_after_sep != after_sep or na_rendered[:after_sep] != rendered[:after_sep]:
        raise ValueError("the chat template renders the passages differently for the calibration query")
    last_start, last_end = spans[-1]
    cut = after_sep
    for candidate in (after_sep, last_end):
        if all(_tokenises_apart(tokenizer, r[last_start:candidate], r[candidate:]) for r in (rendered, na_rendered)):
            cut = candidate
            break
    context = rendered[:cut]
    return IcrPrompt(
        messages=messages,
        na_messages=na_messages,
        context=context,
        doc_char_spans=spans,
        suffix=rendered[cut:],
        na_suffix=na_rendered[cut:],
    )
