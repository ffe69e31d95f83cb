"""The one-call public API: ``Reranker(...).rerank(query, documents) -> RerankResult``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from rerankd.engines.base import Engine
from rerankd.engines.loop_thread import LoopThread
from rerankd.types import Candidate, Query, RerankRequest, RerankResult, StrategyConfig

_STRATEGY: TypeAdapter[StrategyConfig] = TypeAdapter(StrategyConfig)

Document = str | Candidate | Mapping[str, Any]


def _candidates(documents: Sequence[Document]) -> list[Candidate]:
    out = []
    for i, d in enumerate(documents):
        if isinstance(d, Candidate):
            out.append(d)
        elif isinstance(d, str):
            out.append(Candidate(docid=str(i), text=d))
        else:
            out.append(Candidate.model_validate({"docid": str(i), **d}))
    return out


class Reranker:
    """Rerank documents for a query with an LLM, in-process.

    >>> rr = Reranker(strategy="icr")                       # default model, hf engine
    >>> rr.rerank("how do cats purr", ["...", "..."]).docids

    ``strategy`` is a name or a full strategy config (dict or model); ``engine_settings``
    go to :func:`rerankd.engines.factory.load_engine`.  String documents get docids
    ``"0"``, ``"1"``, ... (their input positions).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        strategy: str | Mapping[str, Any] | StrategyConfig = "sliding_window",
        engine: str | Engine = "hf",
        **engine_settings: Any,
    ) -> None:
        if isinstance(strategy, str):
            strategy = {"name": strategy}
        self.strategy: StrategyConfig = (
            _STRATEGY.validate_python(dict(strategy)) if isinstance(strategy, Mapping) else strategy
        )
        if isinstance(engine, str):
            from rerankd.engines.factory import load_engine
            from rerankd.models.registry import DEFAULT_MODEL

            engine = load_engine(engine, model or DEFAULT_MODEL, **engine_settings)
        self.engine: Engine = engine
        # A private loop thread: the engine's batcher lives on one loop across calls.
        self._loop_thread = LoopThread("rerankd-loop")

    def _request(self, query: str, documents: Sequence[Document], top_n: int | None, qid: str | None) -> RerankRequest:
        return RerankRequest(
            query=Query(qid=qid, text=query), candidates=_candidates(documents), strategy=self.strategy, top_n=top_n
        )

    async def arerank(
        self, query: str, documents: Sequence[Document], *, top_n: int | None = None, qid: str | None = None
    ) -> RerankResult:
        """Async variant of :meth:`rerank` (runs on the reranker's own loop)."""
        return await self._loop_thread.run(self._run(self._request(query, documents, top_n, qid)))

    def rerank(
        self, query: str, documents: Sequence[Document], *, top_n: int | None = None, qid: str | None = None
    ) -> RerankResult:
        """Rerank ``documents`` for ``query``; the result holds every docid (or ``top_n``)."""
        req = self._request(query, documents, top_n, qid)
        return self._loop_thread.call(self._run(req))

    async def _run(self, request: RerankRequest) -> RerankResult:
        from rerankd.strategies import rerank

        return await rerank(request, self.engine)

    def close(self) -> None:
        if self._loop_thread.loop.is_closed():
            return
        self._loop_thread.call(self.engine.aclose())
        self._loop_thread.stop(timeout=None)

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
