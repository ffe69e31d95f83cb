"""Admission: where a request runs and every check it must pass before a job is created.

Every API shape (Cohere's and TEI's sync reranks, ``POST /v1/jobs``, each line of a batch) is
turned into an :class:`Ask`; :meth:`Admission.check` resolves its model and runs all the checks
in one order (size limits of the texts, Cohere object documents, our request's own validation,
the fields' limits, the deadline; the callback policy, which resolves DNS, in
:meth:`Admission.check_callback`), and :meth:`Admission.job` builds the new job's fields and
broker message.  Settings-driven and without Redis: creation is :mod:`rerankd.api.creation`.
Each breach is an :class:`~rerankd.api.errors.ApiError` naming the field, the limit and its
setting (413 for counts, 422 for the rest).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rerankd.api.errors import ApiError, LimitError
from rerankd.api.schemas import our_request
from rerankd.config import Settings
from rerankd.jobs import JobStore, new_id
from rerankd.jobs.messages import task_message
from rerankd.jobs.quotas import INTERACTIVE, SETTING_OF, Quota
from rerankd.jobs.routing import strategy_queue
from rerankd.types import RerankRequest, StrategyConfig
from rerankd.webhooks.admission import check_callback

__all__ = ["Admission", "Admitted", "Ask", "NewJob", "Target", "prefer_wait"]

_WAIT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")


@dataclass(frozen=True)
class Target:
    """Where a request runs: the served model, its default strategy and the key prefix of its queues."""

    model: str
    strategy: StrategyConfig
    prefix: str

    def queue(self, req: RerankRequest) -> str:
        """The queue of ``req`` on this model: the one read by workers that can serve its strategy."""
        return strategy_queue(self.prefix, self.model, req.strategy)


@dataclass(frozen=True)
class Ask:
    """A request to admit, whatever API shape it came in.

    ``texts`` are the documents as ranked (``field`` is what the caller calls them, for the
    messages); ``build`` makes our request once the model's default strategy is known (its
    pydantic errors answer 422, :mod:`rerankd.api.handlers`); ``documents``: Cohere's documents,
    whose object fields are bounded too."""

    model: str | None
    query: str
    texts: Sequence[str]
    build: Callable[[StrategyConfig], RerankRequest]
    field: str = "documents"
    documents: Sequence[str | Mapping[str, Any]] = ()
    deadline_s: float | None = None
    callback_url: str | None = None
    priority: int = INTERACTIVE

    @classmethod
    def of(cls, body: RerankRequest, model: str | None = None, priority: int = INTERACTIVE) -> Ask:
        """A request in our shape (``POST /v1/jobs``, a batch line): its own ``model``,
        ``deadline_s`` and ``callback_url`` when it has them, else ``model``."""
        return cls(
            model=getattr(body, "model", None) or model,
            query=body.query.text,
            texts=[c.text for c in body.candidates],
            build=lambda strategy: our_request(body, strategy),
            field="candidates",
            deadline_s=getattr(body, "deadline_s", None),
            callback_url=getattr(body, "callback_url", None),
            priority=priority,
        )


@dataclass(frozen=True)
class Admitted:
    """A request that passed every check: where it runs, our request, its deadline and lane."""

    target: Target
    request: RerankRequest
    deadline_s: float
    priority: int
    callback_url: str | None = None

    @property
    def queue(self) -> str:
        return self.target.queue(self.request)


@dataclass(frozen=True)
class NewJob:
    """A job about to be created: its id, hash fields (``model``, ``strategy``, ``queue``, ...)
    and broker message."""

    id: str
    fields: dict[str, str]
    message: str


class Admission:
    """Target resolution and every check of a request, from the settings alone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def resolve(self, name: str | None) -> Target:
        """The model ``name`` (an alias, a served model or ``None``: the default) runs on; 404 if unknown."""
        try:
            model, strategy = self.settings.resolve_model(name)
        except KeyError as e:
            raise ApiError(404, str(e.args[0]), code="unknown_model") from None
        return Target(model, strategy, self.settings.key_prefix)

    def check(self, ask: Ask, where: str = "") -> Admitted:
        """Every check of ``ask`` but its callback's (:meth:`check_callback`, which resolves DNS),
        in one order; 422 when it has no documents (the request models say so first: Cohere's
        ``documents``, TEI's ``texts``, our ``candidates``).  ``where`` prefixes the messages
        and fields (``line 3: ``)."""
        target = self.resolve(ask.model)
        try:
            check_texts(self.settings, ask.query, ask.texts, field=ask.field)
        except LimitError as e:
            e.message = where + e.message
            raise
        check_documents(self.settings, ask.documents)
        if not ask.texts:
            raise ApiError(422, f"{where}{ask.field}: at least 1 item is needed", field=where + ask.field, limit=1)
        req = ask.build(target.strategy)
        check_fields(self.settings, req, where)
        return Admitted(target, req, self.deadline(ask.deadline_s), ask.priority, ask.callback_url)

    async def check_callback(self, owner: str, url: str | None) -> None:
        """422 unless ``owner`` has a signing secret and ``url`` passes the egress policy (DNS included)."""
        if url:
            try:
                await check_callback(self.settings, owner, url)
            except ValueError as e:
                raise ApiError(422, str(e), field="callback_url") from None

    def deadline(self, deadline_s: float | None) -> float:
        """The job's deadline: ``deadline_s`` or the server's, never above the server's."""
        limit = self.settings.job_deadline_s
        deadline = deadline_s or limit
        if deadline > limit:
            raise LimitError.over(422, "deadline_s", int(deadline), "seconds", int(limit), "RERANKD_JOB_DEADLINE_S")
        return deadline

    def sync_timeout(self, prefer: str | None) -> float:
        """How long a sync call waits: ``Prefer: wait=N`` capped by RERANKD_SYNC_TIMEOUT_S."""
        wait = prefer_wait(prefer)
        limit = self.settings.sync_timeout_s
        return min(wait, limit) if wait else limit

    @staticmethod
    def idempotency_key(key: str | None) -> str | None:
        """``Idempotency-Key``: at most 255 characters."""
        if key and len(key) > 255:
            raise ApiError(422, "Idempotency-Key: at most 255 characters", field="Idempotency-Key")
        return key or None

    def quota(self, owner: str, documents: int, jobs: int = 1, batch: bool = False) -> Quota:
        """The quota ask of a request; 413 when the request alone is over a limit."""
        quota = Quota.of(self.settings, owner, documents, jobs=jobs, batch=batch)
        over = quota.precheck()
        if over is not None:
            limit, message = over
            raise ApiError(
                413,
                message,
                code="too_large",
                field="batch" if batch else "documents",
                limit=quota.limit_value(limit),
                setting=SETTING_OF[limit],
            )
        return quota

    def job(
        self,
        owner: str,
        admitted: Admitted,
        kind: str = "job",
        *,
        expires_in: float | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
    ) -> NewJob:
        """The fields and broker message of a new job for ``admitted`` (one per sync rerank,
        job or batch line)."""
        job_id = new_id("job")
        queue = admitted.queue
        fields = JobStore.job_fields(
            owner=owner,
            model=admitted.target.model,
            queue=queue,
            request=admitted.request,
            deadline_s=admitted.deadline_s,
            max_attempts=self.settings.max_attempts,
            kind=kind,
            callback_url=admitted.callback_url,
            expires_in=expires_in,
            batch_id=batch_id,
            custom_id=custom_id,
            priority=admitted.priority,
        )
        return NewJob(job_id, fields, task_message(job_id, queue, priority=admitted.priority))


def prefer_wait(header: str | None) -> float | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240) in seconds; 422 if malformed."""
    if not header:
        return None
    for pref in header.split(","):
        name, _, value = pref.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not _WAIT.fullmatch(value) or float(value) <= 0:
            raise ApiError(
                422,
                f"Prefer: wait={value!r} is not a positive number of seconds (e.g. 'Prefer: wait=10')",
                field="Prefer",
            )
        return float(value)
    return None


# ---------------------------------------------------------------------- size limits


def _chars(what: str, value: str | None, limit: int, setting: str) -> None:
    if value is not None and len(value) > limit:
        raise LimitError.over(422, what, len(value), "characters", limit, setting)


def check_texts(settings: Settings, query: str, documents: Sequence[str], field: str = "documents") -> None:
    """Documents per request, characters per document and query (body size: :mod:`.body`)."""
    if len(documents) > settings.max_documents:
        raise LimitError.over(413, field, len(documents), "documents", settings.max_documents, "RERANKD_MAX_DOCUMENTS")
    if len(query) > settings.max_query_chars:
        raise LimitError.over(
            422, "query", len(query), "characters", settings.max_query_chars, "RERANKD_MAX_QUERY_CHARS"
        )
    for i, doc in enumerate(documents):
        if len(doc) > settings.max_document_chars:
            raise LimitError.over(
                422, f"{field}[{i}]", len(doc), "characters", settings.max_document_chars, "RERANKD_MAX_DOCUMENT_CHARS"
            )


def check_fields(settings: Settings, req: RerankRequest, where: str = "") -> None:
    """The fields :func:`check_texts` does not cover: ids, titles, feedback vectors,
    ``max_tokens_per_doc`` (``where``: a prefix for the field names, e.g. ``line 3: ``).
    Strategy settings such as ``window_size`` are bounded in :mod:`rerankd.types`."""
    _chars(f"{where}query.qid", req.query.qid, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")
    for i, c in enumerate(req.candidates):
        _chars(f"{where}candidates[{i}].docid", c.docid, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")
        _chars(f"{where}candidates[{i}].title", c.title, settings.max_title_chars, "RERANKD_MAX_TITLE_CHARS")
    if req.feedback is not None:
        dims = len(req.feedback.query_vector)
        if dims > settings.max_feedback_dimensions:
            raise LimitError.over(
                422,
                f"{where}feedback.query_vector",
                dims,
                "dimensions",
                settings.max_feedback_dimensions,
                "RERANKD_MAX_FEEDBACK_DIMENSIONS",
            )
    value = req.max_tokens_per_doc
    if value is not None and value > settings.max_tokens_per_doc:
        limit = settings.max_tokens_per_doc
        raise LimitError.over(422, f"{where}max_tokens_per_doc", value, "tokens", limit, "RERANKD_MAX_TOKENS_PER_DOC")


def check_custom_id(settings: Settings, custom_id: str, where: str = "") -> None:
    """A batch line's ``custom_id`` is bounded like a docid."""
    _chars(f"{where}custom_id", custom_id, settings.max_docid_chars, "RERANKD_MAX_DOCID_CHARS")


def check_documents(settings: Settings, documents: Sequence[str | Mapping[str, Any]]) -> None:
    """Cohere documents: every string field of an object document is bounded like a text."""
    for i, doc in enumerate(documents):
        if isinstance(doc, Mapping):
            for key, value in doc.items():
                if isinstance(value, str):
                    _chars(f"documents[{i}].{key}", value, settings.max_document_chars, "RERANKD_MAX_DOCUMENT_CHARS")
