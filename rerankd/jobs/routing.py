"""Routing by model and capability: which broker queue a job goes to, which queues a worker reads.

A model has one queue per engine capability a strategy can need (the one home of queue names):

============== ====================================== =============================================
capability     queue (a Redis list per lane, below)   strategies
============== ====================================== =============================================
``generate``   ``{prefix}.{model}``                   ``sliding_window``, ``full_ranking``
``logprobs``   ``{prefix}.{model}.logprobs``          ``first``
``attention``  ``{prefix}.{model}.attention``         ``icr``
``score``      ``{prefix}.{model}.score``             ``pointwise`` (a cross-encoder student)
============== ====================================== =============================================

No model name may end with a capability's suffix (``m.attention``'s generation queue would be
``m``'s ICR queue): :func:`check_model_name` refuses it, naming the model, wherever a queue is named.

A ``cascade`` job goes to the queue of its LLM strategy (``llm``): the worker that hosts the
LLM runs it and loads the cascade's student beside its engine.

The generation queue keeps the name a model's only queue had before routing by capability, so
messages queued by an older API (of any strategy) still reach a worker that hosts the model with
generation, and the dashboards and autoscalers that watch it keep working.

A worker reads the queues of the capabilities it serves: by default every capability of its
engine (known once the engine is loaded), or those of the role named by ``RERANKD_WORKER_ROLE``
(:data:`ROLES`), checked against the engine at start-up.  So a *scoring* worker (an engine with
``attention`` and ``logprobs`` but no ``generate``, such as vLLM with ``attention=only``) never
receives a sliding-window job, and a FIRST job reaches whichever role is free first.

Each queue keeps its three lanes (:mod:`rerankd.jobs.quotas`).  kombu's ``BRPOP`` over several
queues lists every queue's interactive lane, then every low lane, then every batch lane, so the
strict lane order holds across a worker's queues.

A strategy whose queue no live worker reads waits there, like a job for a model that has no
worker: a synchronous call gets 503 when its wait ends, a job stays queued until a worker that
can serve it starts (``/healthz`` and ``/v1/queues`` show each worker's queues).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rerankd.engines.base import Capability
from rerankd.types import CascadeConfig, StrategyConfig

__all__ = [
    "CAPABILITIES",
    "ROLES",
    "STRATEGY_NEEDS",
    "check_model_name",
    "model_queues",
    "queue_name",
    "role_capabilities",
    "strategies_of",
    "strategy_queue",
    "worker_capabilities",
    "worker_queues",
]

ROLE_SETTING = "RERANKD_WORKER_ROLE"

STRATEGY_NEEDS: Mapping[str, Capability] = {
    "sliding_window": Capability.GENERATE,
    "full_ranking": Capability.GENERATE,
    "first": Capability.LOGPROBS,
    "icr": Capability.ATTENTION,
    "pointwise": Capability.SCORE,
}
"""The engine capability each strategy needs (each strategy's ``require`` call checks the same)."""

CAPABILITIES: tuple[Capability, ...] = (
    Capability.GENERATE,
    Capability.LOGPROBS,
    Capability.ATTENTION,
    Capability.SCORE,
)
"""Every capability with a queue, in the order a worker lists its queues."""

ROLES: Mapping[str, frozenset[Capability]] = {
    "all": frozenset({Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION}),
    "scoring": frozenset({Capability.ATTENTION, Capability.LOGPROBS}),
    "generating": frozenset({Capability.GENERATE, Capability.LOGPROBS}),
}
"""``RERANKD_WORKER_ROLE`` values (besides ``auto``): the capabilities, hence queues, of the role.
*scoring*: ICR and FIRST from one pooling engine, no decoding; *generating*: sliding window,
full ranking and FIRST."""


def check_model_name(model: str) -> str:
    """``model``, or ``ValueError`` when its name ends like a capability queue (``.logprobs``,
    ``.attention``, ``.score``): its generation queue would be another model's queue (model
    ``m.attention``'s is ``m``'s ICR queue), and a worker runs every job of the queues it reads.
    Other dots are fine (``qwen2.5-coder-0.5b-instruct``): no two queues of allowed names collide."""
    for cap in CAPABILITIES:
        suffix = f".{cap.value}"
        if cap is not Capability.GENERATE and model.endswith(suffix):
            raise ValueError(
                f"model name {model!r} ends with {suffix!r}, the name of model {model[: -len(suffix)]!r}'s "
                f"{cap.value} queue; rename or alias the model (no model name may end with "
                f"{', '.join(repr('.' + c.value) for c in CAPABILITIES if c is not Capability.GENERATE)})"
            )
    return model


def queue_name(prefix: str, model: str, capability: Capability | str = Capability.GENERATE) -> str:
    """The broker queue of ``model``'s jobs that need ``capability`` (see the module docstring);
    ``ValueError`` for a model name :func:`check_model_name` refuses."""
    check_model_name(model)
    cap = Capability(capability)
    return f"{prefix}.{model}" if cap is Capability.GENERATE else f"{prefix}.{model}.{cap.value}"


def strategy_queue(prefix: str, model: str, strategy: str | StrategyConfig) -> str:
    """The queue of a ``strategy`` job on ``model`` (a cascade: its LLM strategy's queue);
    ``ValueError`` for an unknown strategy."""
    if isinstance(strategy, CascadeConfig):
        strategy = strategy.llm
    if not isinstance(strategy, str):
        strategy = strategy.name
    try:
        need = STRATEGY_NEEDS[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGY_NEEDS)}") from None
    return queue_name(prefix, model, need)


def model_queues(prefix: str, model: str) -> list[str]:
    """Every queue of ``model`` (generation first)."""
    return [queue_name(prefix, model, c) for c in CAPABILITIES]


def role_capabilities(role: str) -> frozenset[Capability] | None:
    """The capabilities of ``role`` (``None`` for ``auto``: the engine's); ``ValueError`` if unknown."""
    if role == "auto":
        return None
    try:
        return ROLES[role]
    except KeyError:
        raise ValueError(f"{ROLE_SETTING}={role!r}: expected auto, {', '.join(ROLES)}") from None


def worker_capabilities(role: str, engine_name: str, engine_capabilities: Iterable[Capability]) -> list[Capability]:
    """The capabilities a worker serves: its role's, which its engine must all have (else a
    ``ValueError`` naming the setting), or for ``auto`` its engine's; in :data:`CAPABILITIES` order."""
    have = frozenset(engine_capabilities)
    wanted = role_capabilities(role)
    if wanted is None:
        served = have
    else:
        missing = wanted - have
        if missing:
            names = ", ".join(sorted(c.value for c in missing))
            held = ", ".join(sorted(c.value for c in have)) or "none"
            raise ValueError(
                f"{ROLE_SETTING}={role!r} needs the {names} capability, which engine {engine_name!r} lacks "
                f"(it has: {held}); use a role it can serve ({', '.join(_roles_within(have)) or 'none'}) or auto"
            )
        served = wanted
    out = [c for c in CAPABILITIES if c in served]
    if not out:
        raise ValueError(
            f"engine {engine_name!r} serves no strategy (no generate, logprobs, attention or score capability)"
        )
    return out


def _roles_within(have: frozenset[Capability]) -> list[str]:
    return [r for r, caps in ROLES.items() if caps <= have]


def worker_queues(prefix: str, model: str, capabilities: Iterable[Capability]) -> list[str]:
    """The queues a worker hosting ``model`` with ``capabilities`` reads."""
    return [queue_name(prefix, model, c) for c in capabilities]


def strategies_of(capabilities: Iterable[Capability]) -> list[str]:
    """The strategies whose queues a worker with ``capabilities`` reads."""
    caps = set(capabilities)
    return [s for s, need in STRATEGY_NEEDS.items() if need in caps]
