"""``max_tokens_per_doc``: cut each candidate to a number of tokens of the engine's tokenizer."""

from __future__ import annotations

from rerankd.types import RerankRequest, Tokenizer


def truncate_documents(request: RerankRequest, tokenizer: Tokenizer) -> tuple[RerankRequest, int]:
    """``request`` with every candidate text cut to its first ``request.max_tokens_per_doc``
    tokens (``tokenizer.encode`` without special tokens, decoded back), and the number of
    candidates that were cut.  The returned request has ``max_tokens_per_doc`` unset."""
    limit = request.max_tokens_per_doc
    if limit is None:
        return request, 0
    candidates = []
    cut = 0
    for c in request.candidates:
        ids = tokenizer.encode(c.text)
        if len(ids) > limit:
            cut += 1
            c = c.model_copy(update={"text": tokenizer.decode(ids[:limit]).rstrip("\ufffd")})
        candidates.append(c)
    return request.model_copy(update={"candidates": candidates, "max_tokens_per_doc": None}), cut
