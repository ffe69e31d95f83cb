"""The ``openai`` engine: any OpenAI-compatible server (``vllm serve``, hosted APIs), async.

* Generation: ``POST /chat/completions`` with ``temperature=0`` and the strategy's output
  budget as ``max_tokens`` (or ``max_completion_tokens``, a setting); the server applies the
  model's chat template.
* Next-token logprobs (FIRST): ``POST /completions`` with ``max_tokens=1`` and
  ``logprobs=top_logprobs`` on the already templated prompt, sent as token ids when the
  tokenizer is the model's own Hugging Face tokenizer (exactly what was counted runs; no second
  BOS) and as text with tiktoken.  Identifiers missing from the server's top-k get
  ``min(returned) - TOPK_FLOOR_GAP``.  Servers without completions logprobs (chat-only hosted
  APIs): ``supports_completions_logprobs=False`` declares it; left ``None`` (unknown), the first
  404, or 400 about logprobs, turns the capability off with a :class:`CapabilityError` that
  quotes the server.
* Retries: :mod:`rerankd.engines.openai.retry` (tenacity) on 408/409/429/5xx, timeouts and connection
  errors, with jittered exponential backoff, ``max_attempts`` and a total ``deadline_s`` per
  request; other errors (400, 401, 403, 404, 422) fail at once with the server's message.  The
  SDK's own retries are off (``max_retries=0``).
* Token budgeting uses the ``tokenizer`` setting (see :func:`build_tokenizer`).

Settings come from keyword arguments, else ``RERANKD_OPENAI_<NAME>`` environment variables
(``RERANKD_OPENAI_BASE_URL``, ``RERANKD_OPENAI_API_KEY``, ``RERANKD_OPENAI_MODEL``, ...), else
the defaults of :class:`OpenAISettings`.  See ``docs/engines.md``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import openai

from rerankd.engines.base import Capability, CapabilityError
from rerankd.engines.budget import check_max_tokens, check_prompt_fits, output_budget
from rerankd.engines.hf_tokenizer import HFTokenizer
from rerankd.engines.logprobs import TOPK_FLOOR_GAP, pick_logprobs
from rerankd.engines.openai.retry import call_with_retries, is_retryable, status_code_of
from rerankd.engines.openai.settings import (
    DEFAULT_BASE_URL,
    ENV_PREFIX,
    TIKTOKEN_CONTEXT_SIZE,
    OpenAISettings,
    _tokenizer_context_size,
    build_tokenizer,
)
from rerankd.types import ChatMessage, ContextAttention, Generation, Tokenizer

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_PREFIX",
    "TIKTOKEN_CONTEXT_SIZE",
    "TOPK_FLOOR_GAP",
    "OpenAIEngine",
    "OpenAIRequestError",
    "OpenAISettings",
    "build_tokenizer",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class OpenAIRequestError(RuntimeError):
    """The server refused a request (or kept failing); the message quotes the server."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _server_message(exc: BaseException) -> str:
    """The server's own error message (OpenAI and vLLM shapes), else the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else body.get("message")
        if msg:
            return str(msg)
    return str(getattr(exc, "message", None) or exc)


class _LoopState:
    """The SDK client and request semaphore of one event loop (httpx pools are loop-bound)."""

    def __init__(self, client: openai.AsyncOpenAI, limit: int) -> None:
        self.client = client
        self.semaphore = asyncio.Semaphore(limit)


class OpenAIEngine:
    """OpenAI-compatible server backend: chat generation and completions logprobs.

    Build it with :meth:`load`.  Coroutine methods may run concurrently and from several event
    loops (one SDK client per loop).
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        settings: OpenAISettings,
        tokenizer: Tokenizer,
        context_size: int,
    ) -> None:
        self.model = model
        self.settings = settings
        self.tokenizer = tokenizer
        self.context_size = int(context_size)
        self.retry = settings.retry_policy()
        self._logprobs_supported = settings.supports_completions_logprobs
        self._logprobs_refusal: str | None = None
        caps = {Capability.GENERATE}
        if self._logprobs_supported is not False:
            caps.add(Capability.LOGPROBS)
        self.capabilities: frozenset[Capability] = frozenset(caps)
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._closed = False

    # ----------------------------------------------------------------- construction

    @classmethod
    def load(cls, model: str | None = None, **settings: Any) -> OpenAIEngine:
        """Connect to ``model`` on an OpenAI-compatible server (nothing is sent but, when
        ``context_size`` is unset, one ``GET /models``)."""
        model = model or os.environ.get(ENV_PREFIX + "MODEL")
        if not model:
            raise ValueError(f"the openai engine needs a model name (argument or {ENV_PREFIX}MODEL)")
        cfg = OpenAISettings.from_env(**settings)
        tokenizer = build_tokenizer(cfg.tokenizer, model)
        context_size = cfg.context_size
        if context_size is None:
            context_size = _server_max_model_len(cfg, model)
        if context_size is None:
            context_size = _tokenizer_context_size(tokenizer, cfg.tokenizer, model)
        if context_size is None:
            context_size = TIKTOKEN_CONTEXT_SIZE
            logger.warning(
                "context size of %s unknown; assuming %d (set context_size / %sCONTEXT_SIZE)",
                model, context_size, ENV_PREFIX,
            )  # fmt: skip
        logger.info("openai engine: %s at %s (context %d)", model, cfg.base_url, context_size)
        return cls(model, cfg, tokenizer, context_size)

    # ----------------------------------------------------------------- plumbing

    def _state(self) -> _LoopState:
        if self._closed:
            raise RuntimeError("the engine is closed")
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [lp for lp in self._states if lp.is_closed()]:
                del self._states[old]
            client = openai.AsyncOpenAI(
                base_url=self.settings.base_url,
                api_key=self.settings.api_key,
                max_retries=0,
                timeout=self.settings.request_timeout_s,
            )
            state = _LoopState(client, self.settings.max_concurrent_requests)
            self._states[loop] = state
        return state

    async def _request(self, describe: str, send: Callable[[openai.AsyncOpenAI, float], Awaitable[T]]) -> T:
        """One request with bounded retries; non-retryable errors become OpenAIRequestError."""
        state = self._state()
        async with state.semaphore:
            try:
                return await call_with_retries(
                    lambda timeout: send(state.client, timeout), self.retry, describe=describe
                )
            except openai.APIStatusError as e:  # not retryable: fail at once, quote the server
                where = self.settings.base_url
                raise OpenAIRequestError(
                    f"{describe}: {where} answered HTTP {e.status_code}: {_server_message(e)}", e.status_code
                ) from e

    # ----------------------------------------------------------------- Engine protocol

    async def generate(self, prompts: Sequence[Sequence[ChatMessage]], max_tokens: int) -> list[Generation]:
        """Greedy chat completions (one per prompt, same order), all requests in flight at once."""
        check_max_tokens(max_tokens)
        jobs = []
        for i, messages in enumerate(prompts):
            if messages and messages[-1].role == "assistant":
                raise ValueError(
                    "the openai engine cannot continue a prefilled assistant message "
                    "(chat APIs answer it as a finished turn); end the prompt with a user message"
                )
            counted = self.tokenizer.count_chat(messages)
            budget = output_budget(i, counted, max_tokens, self.context_size, self.model)
            jobs.append(self._chat(list(messages), budget, counted))
        return list(await asyncio.gather(*jobs))

    async def _chat(self, messages: list[ChatMessage], max_tokens: int, counted: int) -> Generation:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": 0.0,
            self.settings.max_tokens_field: max_tokens,
        }

        async def send(client: openai.AsyncOpenAI, timeout: float) -> Any:
            return await client.chat.completions.create(**request, timeout=timeout)

        resp = await self._request(f"chat completion ({self.model})", send)
        if not resp.choices:
            raise OpenAIRequestError(f"{self.settings.base_url} returned no choices for {self.model}")
        text = resp.choices[0].message.content or ""
        usage = resp.usage
        return Generation(
            text=text,
            prompt_tokens=int(usage.prompt_tokens) if usage is not None else counted,
            completion_tokens=(int(usage.completion_tokens) if usage is not None else len(self.tokenizer.encode(text))),
        )

    async def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """Log-probabilities of ``token_ids`` as the next token after each raw prompt
        (``/completions`` top-k; ids outside it get ``min(top-k) - TOPK_FLOOR_GAP``)."""
        if self._logprobs_supported is False:
            raise CapabilityError(self._logprobs_refusal or (
                f"engine 'openai' ({self.model} at {self.settings.base_url}) is configured without "
                "completions logprobs (supports_completions_logprobs=False); FIRST needs them"
            ))  # fmt: skip
        keys = [self._token_text(int(t)) for t in token_ids]
        clash = {k for k in keys if keys.count(k) > 1}
        if clash:
            raise ValueError(f"token ids {list(token_ids)} decode to the same text {sorted(clash)}")
        jobs = []
        for i, text in enumerate(prompts):
            ids = self.tokenizer.encode(text)
            check_prompt_fits(i, len(ids), self.context_size, self.model)
            jobs.append(self._top_logprobs(ids, text, keys))
        return list(await asyncio.gather(*jobs))

    def _token_text(self, token_id: int) -> str:
        """The text token ``token_id`` adds after ``[`` (how servers key their top logprobs: a
        SentencePiece ``"▁A"`` is ``" A"`` there, ``"A"`` is ``"A"``)."""
        base = self.tokenizer.encode("[")
        return self.tokenizer.decode([*base, token_id])[len(self.tokenizer.decode(base)) :]

    async def _top_logprobs(self, ids: list[int], text: str, keys: list[str]) -> list[float]:
        prompt: Any = ids if isinstance(self.tokenizer, HFTokenizer) else text

        async def send(client: openai.AsyncOpenAI, timeout: float) -> Any:
            return await client.completions.create(
                model=self.model,
                prompt=prompt,
                max_tokens=1,
                temperature=0.0,
                logprobs=self.settings.top_logprobs,
                timeout=timeout,
            )

        try:
            resp = await self._request(f"completion logprobs ({self.model})", send)
        except OpenAIRequestError as e:
            status = e.status_code
            refused = status == 404 or (status == 400 and "logprob" in str(e).lower())
            if refused and self._logprobs_supported is None:
                self._refuse_logprobs(f"{e} (no completions logprobs on this server; FIRST cannot run)")
                raise CapabilityError(self._logprobs_refusal) from e
            raise
        choice = resp.choices[0] if resp.choices else None
        top = choice.logprobs.top_logprobs if choice is not None and choice.logprobs is not None else None
        if not top or not top[0]:
            msg = (
                f"{self.settings.base_url} returned no logprobs for {self.model} from /completions "
                "(the server ignores 'logprobs'); FIRST cannot run on it"
            )
            if self._logprobs_supported is None:
                self._refuse_logprobs(msg)
            raise CapabilityError(msg)
        self._logprobs_supported = True
        got = {str(k): float(v) for k, v in top[0].items()}
        return pick_logprobs(got, keys)

    def _refuse_logprobs(self, message: str) -> None:
        self._logprobs_supported = False
        self._logprobs_refusal = message
        self.capabilities = self.capabilities - {Capability.LOGPROBS}
        logger.warning("%s", message)

    async def query_attention(
        self, context: str, suffixes: Sequence[str], layers: tuple[int, int] | None = None
    ) -> ContextAttention:
        """Not available: OpenAI-compatible APIs do not return attention weights."""
        raise CapabilityError(
            "the 'openai' engine cannot return attention weights (OpenAI-compatible APIs do not "
            "expose them); use the 'hf' engine for strategy 'icr'"
        )

    async def aclose(self) -> None:
        """Close the SDK client of the current event loop and forget the others."""
        self._closed = True
        states, self._states = self._states, {}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always awaited in a loop
            return
        state = states.get(loop)
        if state is not None:
            await state.client.close()


def _server_max_model_len(cfg: OpenAISettings, model: str) -> int | None:
    """``max_model_len`` of ``model`` from the server's ``GET /models`` (a vLLM extension)."""
    client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, max_retries=0, timeout=10.0)
    try:
        for m in client.models.list():
            if m.id == model:
                value = getattr(m, "max_model_len", None) or (m.model_extra or {}).get("max_model_len")
                return int(value) if value else None
    except openai.OpenAIError as e:
        code = status_code_of(e)
        level = logging.DEBUG if code is not None and not is_retryable(e) else logging.WARNING
        logger.log(level, "could not ask %s for the context size of %s: %s", cfg.base_url, model, e)
    finally:
        client.close()
    return None
