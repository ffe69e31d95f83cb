"""Routing by model and capability: queue choice, worker queues, roles, lane order across queues."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pydantic import ValidationError

from rerankd.api.admission import Target
from rerankd.config import Settings
from rerankd.engines.base import Capability, CapabilityError
from rerankd.jobs.quotas import BATCH, INTERACTIVE, LOW, lane_key
from rerankd.jobs.routing import (
    CAPABILITIES,
    ROLES,
    STRATEGY_NEEDS,
    model_queues,
    queue_name,
    strategies_of,
    strategy_queue,
    worker_capabilities,
    worker_queues,
)
from rerankd.strategies import get_strategy
from rerankd.types import Candidate, Query, RerankRequest
from tests.support.scripted_engine import ScriptedEngine

GEN, LOGP, ATT = Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION
STRATEGIES = {
    "sliding_window": {"name": "sliding_window", "window_size": 4, "stride": 2},
    "full_ranking": {"name": "full_ranking"},
    "first": {"name": "first", "window_size": 4, "stride": 2},
    "icr": {"name": "icr"},
    "pointwise": {"name": "pointwise"},
}


def _request(strategy: str) -> RerankRequest:
    cands = [Candidate(docid=f"d{i}", text=f"passage {i} rel={i}") for i in range(5)]
    return RerankRequest.model_validate(
        {"query": Query(text="q"), "candidates": cands, "strategy": STRATEGIES[strategy]}
    )


def test_every_strategy_has_a_queue_per_model_by_the_capability_it_needs() -> None:
    assert set(STRATEGY_NEEDS) == set(STRATEGIES)
    assert queue_name("rerankd", "m") == "rerankd.m"  # the generation queue keeps the old name
    assert model_queues("rerankd", "m") == ["rerankd.m", "rerankd.m.logprobs", "rerankd.m.attention", "rerankd.m.score"]
    assert strategy_queue("rerankd", "m", "sliding_window") == strategy_queue("rerankd", "m", "full_ranking")
    assert strategy_queue("rerankd", "m", "first") == "rerankd.m.logprobs"
    assert strategy_queue("rerankd", "m", "icr") == "rerankd.m.attention"
    assert strategy_queue("rerankd", "m", "icr") != strategy_queue("rerankd", "m2", "icr")
    assert {strategy_queue("p", "m", s) for s in STRATEGIES} == set(model_queues("p", "m"))
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategy_queue("rerankd", "m", "nope")


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
async def test_the_table_matches_what_each_strategy_requires(strategy: str) -> None:
    """STRATEGY_NEEDS is what the strategy itself checks: without that capability it refuses,
    with only that capability it runs."""
    need = STRATEGY_NEEDS[strategy]
    rerank = get_strategy(strategy)
    with pytest.raises(CapabilityError, match=repr(need.value)):
        await rerank(_request(strategy), ScriptedEngine(capabilities=frozenset(CAPABILITIES) - {need}))
    if strategy not in ("icr", "pointwise"):  # no attention, no pair scores: their own tests cover them
        result = await rerank(_request(strategy), ScriptedEngine(capabilities=frozenset({need})))
        assert sorted(r.docid for r in result.ranking) == [f"d{i}" for i in range(5)]


def test_api_targets_route_each_request_by_its_strategy() -> None:
    target = Target("m", _request("sliding_window").strategy, "p")
    assert {s: target.queue(_request(s)) for s in STRATEGIES} == {
        "sliding_window": "p.m",
        "full_ranking": "p.m",
        "first": "p.m.logprobs",
        "icr": "p.m.attention",
        "pointwise": "p.m.score",
    }


def test_worker_queues_follow_the_engine_capabilities_or_the_role() -> None:
    everything = [GEN, LOGP, ATT]
    assert worker_capabilities("auto", "hf", everything) == everything
    assert worker_capabilities("auto", "vllm", {ATT, LOGP}) == [LOGP, ATT]  # attention=only: scoring
    assert worker_capabilities("auto", "vllm", {GEN, LOGP}) == [GEN, LOGP]  # attention=off: generating
    assert worker_capabilities("scoring", "hf", everything) == [LOGP, ATT]
    assert worker_capabilities("generating", "hf", everything) == [GEN, LOGP]
    assert worker_capabilities("all", "hf", everything) == everything
    assert worker_queues("p", "m", [LOGP, ATT]) == ["p.m.logprobs", "p.m.attention"]
    assert strategies_of([LOGP, ATT]) == ["first", "icr"]
    assert strategies_of([GEN, LOGP]) == ["sliding_window", "full_ranking", "first"]
    # FIRST is the one strategy both roles serve
    both = set(strategies_of(ROLES["scoring"])) & set(strategies_of(ROLES["generating"]))
    assert both == {"first"}


def test_a_role_the_engine_cannot_serve_is_a_start_up_error_naming_the_setting() -> None:
    with pytest.raises(ValueError) as e:
        worker_capabilities("generating", "vllm", {ATT, LOGP})
    msg = str(e.value)
    assert "RERANKD_WORKER_ROLE='generating' needs the generate capability" in msg and "'vllm'" in msg
    assert "scoring" in msg  # the role it can serve
    with pytest.raises(ValueError, match="RERANKD_WORKER_ROLE='all' needs the attention capability"):
        worker_capabilities("all", "vllm", {GEN, LOGP})
    with pytest.raises(ValueError, match="serves no strategy"):
        worker_capabilities("auto", "odd", set())


def test_the_role_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANKD_WORKER_ROLE", "scoring")
    assert Settings().worker_role == "scoring"
    monkeypatch.setenv("RERANKD_WORKER_ROLE", "decoding")
    with pytest.raises(ValidationError, match="RERANKD_WORKER_ROLE='decoding': expected auto, all, scoring"):
        Settings()


def test_a_worker_consumes_exactly_its_queues() -> None:
    """The worker_init hook selects the queues of the loaded engine for Celery's consumer."""
    from rerankd.worker import app as worker_app
    from rerankd.worker.celery_app import make_celery

    class Sender:
        app = make_celery(Settings(key_prefix="p", model="m"))

    worker_app._consume(Sender, ["p.m.logprobs", "p.m.attention"])
    assert sorted(Sender.app.amqp.queues.consume_from) == ["p.m.attention", "p.m.logprobs"]


def test_strict_lane_order_holds_across_a_workers_queues(redis_url: str) -> None:
    """kombu's BRPOP over several queues asks every interactive lane, then every low lane, then every
    batch lane: a batch job of one queue never passes an interactive job of another."""
    from kombu import Consumer, Queue

    from rerankd.jobs.messages import task_message
    from rerankd.worker.celery_app import make_celery

    prefix = f"route-{secrets.token_hex(3)}"
    app = make_celery(Settings(redis_url=redis_url, key_prefix=prefix, model="m"))
    gen, logp, att = model_queues(prefix, "m")[:3]
    pushes = [  # (queue, lane, job): pushed oldest first
        (gen, BATCH, "gen-batch"),
        (att, BATCH, "att-batch"),
        (logp, LOW, "logp-low"),
        (att, INTERACTIVE, "att-now"),
        (gen, INTERACTIVE, "gen-now"),
    ]
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        for queue, lane, job in pushes:
            r.lpush(lane_key(queue, lane), task_message(job, queue, priority=lane))
        got: list[str] = []

        def on_message(body: Any, message: Any) -> None:
            got.append(body[0][0])  # task protocol 2: [args, kwargs, embed]
            message.ack()

        with app.connection_for_read() as conn:
            with Consumer(conn, queues=[Queue(q) for q in (gen, logp, att)], callbacks=[on_message], prefetch_count=1):
                while len(got) < len(pushes):
                    conn.drain_events(timeout=10)
        assert set(got[:2]) == {"att-now", "gen-now"}
        assert got[2] == "logp-low"
        assert set(got[3:]) == {"gen-batch", "att-batch"}
    finally:
        keys = [k for k in r.scan_iter(match=f"{prefix}*")] + [
            k for q in (gen, logp, att) for k in r.scan_iter(match=f"{q}*")
        ]
        if keys:
            r.delete(*keys)
        r.close()


@pytest.mark.parametrize("model", ["m.attention", "m.logprobs", "org/m.score"])
def test_a_model_named_like_another_models_queue_is_refused(model: str) -> None:
    """Model ``m.attention``'s generation queue would be ``m``'s ICR queue: a worker hosting it
    would take m's ICR jobs and run them on another model.  The name is refused, named."""
    import re

    for name in (
        lambda: queue_name("rerankd", model),
        lambda: worker_queues("rerankd", model, [GEN, LOGP]),
        lambda: model_queues("rerankd", model),
        lambda: strategy_queue("rerankd", model, "first"),
    ):
        with pytest.raises(ValueError, match=re.escape(repr(model))):
            name()


def test_queues_of_allowed_names_never_collide() -> None:
    """Dots are fine (qwen2.5-...); names ending with a capability's name but not its suffix too."""
    names = ["m", "m.generate", "qwen2.5-coder-0.5b-instruct", "org/m.attention2", "mattention", "m.x", "m.x.y"]
    queues = [q for m in names for q in model_queues("rerankd", m)]
    assert len(set(queues)) == len(queues)
    assert queue_name("rerankd", "qwen2.5-coder-0.5b-instruct", LOGP) == "rerankd.qwen2.5-coder-0.5b-instruct.logprobs"


def test_a_prefork_parent_needs_a_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefork parent reads its queues before any engine loads: with ``auto`` it used to read
    every queue of the model (``.score`` too), taking jobs its children answer with CapabilityError."""
    from rerankd.worker import app as worker_app
    from rerankd.worker.celery_app import make_celery

    class Sender:
        pool_cls = "prefork"
        app = make_celery(Settings(key_prefix="p", model="m"))

    monkeypatch.setattr(worker_app, "settings", Settings(key_prefix="p", model="m", worker_role="auto"))
    with pytest.raises(SystemExit, match=r"RERANKD_WORKER_ROLE=auto .*all, scoring, generating"):
        worker_app._on_worker_init(sender=Sender)
    monkeypatch.setattr(worker_app, "settings", Settings(key_prefix="p", model="m", worker_role="scoring"))
    worker_app._on_worker_init(sender=Sender)
    assert sorted(Sender.app.amqp.queues.consume_from) == ["p.m.attention", "p.m.logprobs"]
