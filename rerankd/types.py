"""Pydantic contracts shared by every layer of rerankd.

Everything that crosses a module boundary (CLI -> strategy, strategy -> engine,
api -> worker) is one of these models.  No mutable defaults: lists default via
``default_factory``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --------------------------------------------------------------------------- inputs


class Candidate(BaseModel):
    """One first-stage candidate passage."""

    model_config = ConfigDict(extra="forbid")

    docid: str = Field(min_length=1)
    text: str
    title: str | None = None
    score: float | None = None


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qid: str | None = None
    text: str = Field(min_length=1)


ParseRule = Literal["bracketed", "rank_llm"]
"""How generated identifiers are read; see :mod:`rerankd.strategies.parsing`."""

IdentifierRule = Literal["as_written", "after_bracket"]
"""How FIRST reads its identifiers; see :mod:`rerankd.strategies.first_tokens`."""

MAX_OUTPUT_TOKENS = 32_768
"""Upper limit of a strategy's ``max_output_tokens`` setting."""
MAX_WINDOW_SIZE = 100
"""Upper limit of ``window_size`` (longer lists: ``full_ranking``)."""
MAX_WORDS_PER_PASSAGE = 2_000
"""Upper limit of ICR's ``max_words_per_passage``."""
MAX_TOKENS_PER_DOC = 100_000
"""Upper limit of a request's ``max_tokens_per_doc``."""


def _check_windows(window_size: int, stride: int) -> None:
    if not 2 <= window_size <= MAX_WINDOW_SIZE:
        raise ValueError(f"window_size must be between 2 and {MAX_WINDOW_SIZE}, got {window_size}")
    if not 1 <= stride <= window_size:
        raise ValueError(f"stride must be between 1 and window_size ({window_size}), got {stride}")


class SlidingWindowConfig(BaseModel):
    """RankGPT / RankZephyr: back-to-front windows, generated ``[i] > [j]`` permutations."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["sliding_window"] = "sliding_window"
    window_size: int = 20
    stride: int = 10
    passes: int = Field(default=1, ge=1, le=10)
    prompt: str = "rank_zephyr"
    parser: ParseRule = "bracketed"
    """How identifiers are read from the generation: ``bracketed`` or ``rank_llm`` (their exact rule)."""
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    """Generation budget per window; ``None``: the tokens of a full permutation of the window."""

    @model_validator(mode="after")
    def _validate(self) -> SlidingWindowConfig:
        _check_windows(self.window_size, self.stride)
        return self


class FullRankingConfig(BaseModel):
    """One generation call over every candidate (long-context listwise models)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["full_ranking"] = "full_ranking"
    max_candidates: int = Field(default=100, ge=2, le=1000)
    prompt: str = "fullrank"
    parser: ParseRule = "bracketed"
    """How identifiers are read from the generation: ``bracketed`` or ``rank_llm`` (their exact rule)."""
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    """Generation budget; ``None``: the tokens of a full permutation of the candidates."""


class FirstConfig(BaseModel):
    """FIRST: rank a window by the logits of the first generated identifier."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["first"] = "first"
    window_size: int = 20
    stride: int = 10
    prompt: str = "first"
    identifiers: IdentifierRule = "as_written"
    """``as_written``: each identifier's probability as the tokenizer writes ``[X`` at the answer
    start (one merged token, or ``[`` then the letter); ``after_bracket``: ``[`` appended to the
    prompt and the letter token read after it (FIRST as published)."""

    @model_validator(mode="after")
    def _validate(self) -> FirstConfig:
        _check_windows(self.window_size, self.stride)
        if self.window_size > 26:
            raise ValueError(f"window_size must be at most 26 for alphabetic identifiers, got {self.window_size}")
        return self


class ICRConfig(BaseModel):
    """In-context reranking: score passages by the attention the query pays them."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["icr"] = "icr"
    calibration: Literal["masked_na", "na", "none"] = "masked_na"
    doc_order: Literal["first_stage", "reversed"] = "reversed"
    max_words_per_passage: int = Field(default=300, ge=1, le=MAX_WORDS_PER_PASSAGE)
    layers: tuple[int, int] | None = None
    """Layer window ``(START, END)``: sum the attention of layers ``START <= l < END`` only (0-based,
    half-open like a slice; ``"START:END"`` or ``[START, END]``) and stop the forward pass after
    layer ``END - 1``.  ``None``: all layers, as in the paper."""

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v: object) -> object:
        if isinstance(v, str) and ":" in v:
            start, _, end = v.partition(":")
            try:
                return (int(start), int(end))
            except ValueError:
                pass
        if v is None or isinstance(v, (list, tuple)):
            return v
        raise ValueError(f"layers must be START:END (two integers, e.g. 4:16), got {v!r}")

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"layers must be START:END with 0 <= START < END, got {v[0]}:{v[1]}")
        return v


MAX_PAIR_TOKENS = 8_192
"""Upper limit of a cross-encoder's ``max_length`` (query + passage tokens)."""


class PointwiseConfig(BaseModel):
    """Score each (query, passage) pair on its own with a cross-encoder (a distilled student)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["pointwise"] = "pointwise"
    max_length: int | None = Field(default=None, ge=8, le=MAX_PAIR_TOKENS)
    """Tokens per pair (query + passage, truncated); ``None``: the engine's own limit."""


LLMStrategyConfig = Annotated[
    SlidingWindowConfig | FullRankingConfig | FirstConfig | ICRConfig,
    Field(discriminator="name"),
]
"""The strategies that run an LLM (a cascade's second stage)."""


class CascadeConfig(BaseModel):
    """A cross-encoder student over the first ``student_top_k`` candidates, then an LLM strategy
    over the student's first ``top_k``: one job, one result (see :mod:`rerankd.strategies.cascade`)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["cascade"] = "cascade"
    student: str = Field(min_length=1)
    """The student: a student folder or a registered student name (``rerankd distill train --name``)."""
    student_top_k: int | None = Field(default=None, ge=1)
    """Candidates the student scores (the rest keep their first-stage order after them); ``None``: all."""
    top_k: int = Field(default=20, ge=2, le=1000)
    """The student's first ``top_k`` go to the LLM strategy."""
    llm: LLMStrategyConfig = Field(default_factory=lambda: ICRConfig())
    """The LLM strategy over the student's ``top_k`` (run by the worker's own engine)."""
    max_length: int | None = Field(default=None, ge=8, le=MAX_PAIR_TOKENS)
    """The student's tokens per pair; ``None``: the student's own limit."""

    @model_validator(mode="after")
    def _validate(self) -> CascadeConfig:
        if self.student_top_k is not None and self.student_top_k < self.top_k:
            raise ValueError(f"student_top_k ({self.student_top_k}) must be at least top_k ({self.top_k})")
        return self


StrategyConfig = Annotated[
    SlidingWindowConfig | FullRankingConfig | FirstConfig | ICRConfig | PointwiseConfig | CascadeConfig,
    Field(discriminator="name"),
]

STRATEGY_NAMES = ("sliding_window", "full_ranking", "first", "icr", "pointwise", "cascade")


class FeedbackRequest(BaseModel):
    """Query-side relevance feedback: dense embeddings to refit to the reranker's scores.

    After reranking, ``query_vector`` is moved toward the reranker's judgement of the
    candidates (:func:`rerankd.feedback.refit.refit_query`, whose parameters these are) and
    returned as ``RerankResult.feedback``, ready for a second retrieval.
    """

    model_config = ConfigDict(extra="forbid")

    query_vector: list[float] = Field(min_length=1, max_length=16384)
    candidate_vectors: list[list[float]] = Field(min_length=1)
    """One embedding per candidate, in the request's candidate order."""
    steps: int = Field(default=50, ge=0, le=1000)
    lr: float | None = Field(default=None, gt=0, le=1.0)
    temperature: float = Field(default=0.05, gt=0, le=100.0)
    kl_weight: float = Field(default=1.0, ge=0)
    rank_weight: float = Field(default=1.0, ge=0)
    optimizer: Literal["gd", "adam"] = "gd"

    @model_validator(mode="after")
    def _shapes(self) -> FeedbackRequest:
        dim = len(self.query_vector)
        if not all(math.isfinite(x) for x in self.query_vector):
            raise ValueError("query_vector must hold finite numbers")
        for i, vec in enumerate(self.candidate_vectors):
            if len(vec) != dim:
                raise ValueError(
                    f"candidate_vectors[{i}] has {len(vec)} dimensions, query_vector has {dim}; they must match"
                )
            if not all(math.isfinite(x) for x in vec):
                raise ValueError(f"candidate_vectors[{i}] must hold finite numbers")
        return self


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Query
    candidates: list[Candidate] = Field(min_length=1)
    strategy: StrategyConfig = Field(default_factory=SlidingWindowConfig)
    top_n: int | None = Field(default=None, ge=1)
    feedback: FeedbackRequest | None = None
    """Optional embeddings: the result then carries the refit query vector."""
    max_tokens_per_doc: int | None = Field(default=None, ge=1, le=MAX_TOKENS_PER_DOC)
    """Truncate each candidate's text to this many tokens of the engine's tokenizer before
    reranking (Cohere's ``max_tokens_per_doc``); ``None``: no truncation."""

    @model_validator(mode="after")
    def _unique_docids(self) -> RerankRequest:
        seen: set[str] = set()
        for i, c in enumerate(self.candidates):
            if c.docid in seen:
                raise ValueError(f"candidates[{i}].docid {c.docid!r} is duplicated; docids must be unique")
            seen.add(c.docid)
        if self.feedback is not None and len(self.feedback.candidate_vectors) != len(self.candidates):
            raise ValueError(
                f"feedback.candidate_vectors has {len(self.feedback.candidate_vectors)} vectors for "
                f"{len(self.candidates)} candidates; give one per candidate, in candidate order"
            )
        return self


# --------------------------------------------------------------------------- outputs


class RankedDoc(BaseModel):
    docid: str
    rank: int = Field(ge=1)
    score: float
    """The strategy's own score (its scale depends on model and strategy)."""
    first_stage_rank: int = Field(ge=1)
    relevance: float | None = None
    """P(relevant) from the calibration loaded for the model, strategy and settings
    (:mod:`rerankd.calibration`); ``None`` when none is loaded."""


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0

    def add(self, prompt_tokens: int = 0, completion_tokens: int = 0, llm_calls: int = 0) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.llm_calls += llm_calls


class FeedbackResult(BaseModel):
    """The refit query vector of a request with ``feedback``."""

    query_vector: list[float]
    shift: float
    """L2 norm of the change to the query vector (0: the retriever already agreed)."""
    cosine: float
    """Cosine similarity between the original and the refit query vector."""


class RerankResult(BaseModel):
    qid: str | None = None
    ranking: list[RankedDoc]
    strategy: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    feedback: FeedbackResult | None = None
    calibration: str | None = None
    """The id of the calibration that set the passages' ``relevance``; ``None``: uncalibrated."""

    @property
    def docids(self) -> list[str]:
        return [d.docid for d in self.ranking]


# --------------------------------------------------------------------------- engine I/O


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Generation(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int


class ContextAttention(BaseModel):
    """Attention paid by each query suffix to every token of a shared context.

    ``token_offsets[i]`` is the character span ``[start, end)`` of context token ``i``;
    ``scores[k][i]`` is the attention from suffix ``k``'s tokens to context token ``i``,
    summed over layers and heads and averaged over the suffix tokens.
    """

    token_offsets: list[tuple[int, int]]
    scores: list[list[float]]
    prompt_tokens: int


# --------------------------------------------------------------------------- tokenizer protocol


@runtime_checkable
class Tokenizer(Protocol):
    """What prompts and strategies need of a model's tokenizer (implemented by engines)."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The model's chat template applied to ``messages``, as text."""
        ...

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the rendered chat prompt (with the generation prompt)."""
        ...


class RerankInputError(ValueError):
    """A request that a strategy cannot serve as given (the message names field and limit)."""
