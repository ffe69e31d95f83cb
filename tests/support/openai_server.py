"""A scripted local OpenAI-compatible HTTP server (stdlib, a thread) and small helpers around it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rerankd.engines.openai.engine import OpenAIEngine
from rerankd.types import ChatMessage


@dataclass
class Reply:
    """One scripted answer: status, JSON (or text) body, headers, and a delay before it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def chat_reply(text: str = "[2] > [1]", prompt_tokens: int = 11, completion_tokens: int = 5) -> Reply:
    return Reply(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def completion_reply(top: dict[str, float]) -> Reply:
    best = max(top, key=lambda k: top[k])
    return Reply(
        body={
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": best,
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": [best],
                        "token_logprobs": [top[best]],
                        "top_logprobs": [top],
                        "text_offset": [0],
                    },
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    )


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "invalid_request_error", "code": status}},
        headers=headers or {},
    )


class ScriptedServer:
    """A local OpenAI-compatible server whose answers are scripted per path.

    ``script(path, *replies)`` queues answers; the last one repeats.  ``requests`` records
    ``(path, json body, monotonic time)`` of every request.
    """

    def __init__(self, max_model_len: int | None = 2048) -> None:
        self.requests: list[tuple[str, Any, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        models: dict[str, Any] = {"id": "m", "object": "model", "owned_by": "test"}
        if max_model_len is not None:
            models["max_model_len"] = max_model_len
        self.script("/v1/models", Reply(body={"object": "list", "data": [models]}))
        self.script("/v1/chat/completions", chat_reply())
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                reply = server._next(self.path, body)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                with server._lock:
                    server.in_flight -= 1
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            do_GET = _answer
            do_POST = _answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = list(replies)

    def _next(self, path: str, body: Any) -> Reply:
        with self._lock:
            self.requests.append((path, body, time.monotonic()))
            queue = self._scripts.get(path.split("?")[0])
            if not queue:
                return error_reply(404, f"no route {path}")
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def calls(self, path: str) -> list[Any]:
        with self._lock:
            return [b for p, b, _ in self.requests if p == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def fast_engine(server: ScriptedServer, **settings: Any) -> OpenAIEngine:
    base: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": "test-key",
        "tokenizer": "tiktoken:cl100k_base",
        "initial_backoff_s": 0.01,
        "max_backoff_s": 0.05,
    }
    base.update(settings)
    return OpenAIEngine.load("m", **base)
