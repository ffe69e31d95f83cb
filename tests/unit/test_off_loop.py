"""CPU-heavy strategy steps (prompt fitting, ICR chunk planning and scoring, the feedback refit)
run in a thread, never on the event loop that renews the worker's leases."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import rerankd.feedback.refit as refit
import rerankd.strategies.first as first
import rerankd.strategies.icr as icr
import rerankd.strategies.sliding_window as sliding_window
from rerankd.strategies import rerank
from rerankd.types import FirstConfig, RerankRequest, SlidingWindowConfig
from tests.support.feedback import embeddings
from tests.support.feedback import request as feedback_request
from tests.support.icr import StubAttentionEngine, make_request
from tests.support.scripted_engine import ScriptedEngine


def _spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace ``module.name`` by a wrapper recording the thread of each call."""
    threads: list[int] = []
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return threads


def _run_on_loop(request: RerankRequest, engine: Any) -> int:
    """Rerank on a fresh loop; returns the loop thread's id."""

    async def main() -> int:
        await rerank(request, engine)
        return threading.get_ident()

    return asyncio.run(main())


def test_prompt_fitting_and_the_refit_run_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    fit = _spy(monkeypatch, sliding_window, "fit_prompt")
    refits = _spy(monkeypatch, refit, "apply_feedback")
    q, cands = embeddings(6)
    req = feedback_request(feedback={"query_vector": q, "candidate_vectors": cands})
    req = req.model_copy(update={"strategy": SlidingWindowConfig(window_size=4, stride=2)})
    loop_thread = _run_on_loop(req, ScriptedEngine())
    assert len(fit) >= 2 and len(refits) == 1
    assert loop_thread not in fit + refits


def test_first_prompt_fitting_runs_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    fit = _spy(monkeypatch, first, "fit_first_prompt")
    req = feedback_request().model_copy(update={"strategy": FirstConfig(window_size=4, stride=2)})
    loop_thread = _run_on_loop(req, ScriptedEngine())
    assert fit and loop_thread not in fit


def test_icr_planning_and_scoring_run_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _spy(monkeypatch, icr, "plan_chunks")
    score = _spy(monkeypatch, icr, "score_passages")
    loop_thread = _run_on_loop(make_request(["a b", "c d", "e f"]), StubAttentionEngine())
    assert plan and score and loop_thread not in plan + score
