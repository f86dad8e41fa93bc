"""A loopback HTTP server that speaks vLLM's OpenAI-compatible chat API, strictly, with faults.

It accepts exactly the chat-completions fields vLLM documents for structured outputs
(``structured_outputs: {"choice": [...]}``; ``guided_choice`` only when started as a
pre-0.12 server) and answers anything else with vLLM's 400 error body. Faults are queued
per request: ``slow`` (sleep before answering), ``500``, ``429``, ``malformed`` (a truncated
JSON body), ``drop`` (close the connection without a response), ``outside`` (an answer not
among the choices, as a broken server might send).
"""

from __future__ import annotations

import json
import time
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Any

from router.testing._loopback import FixtureHandler, HTTPFixture

_CHAT_FIELDS = {
    "model", "messages", "temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "stream",
    "stop", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "user",
}
_STRUCTURED_KEYS = {"choice", "json", "regex", "grammar", "whitespace_pattern", "structural_tag"}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param


class FakeVLLM(HTTPFixture):
    def __init__(self, model: str = "Qwen/Qwen2.5-1.5B-Instruct", legacy: bool = False) -> None:
        self.model = model
        self.legacy = legacy  # pre-0.12: guided_choice instead of structured_outputs
        self.script: dict[str, str] = {}  # query (the prompt's "Message:" line) -> answer
        self.faults: deque[tuple[str, float]] = deque()
        self.sticky_fault: tuple[str, float] | None = None
        self.requests: list[dict[str, Any]] = []
        self._last_system = ""
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fault(self, kind: str, times: int = 1, seconds: float = 0.0) -> None:
        for _ in range(times):
            self.faults.append((kind, seconds))

    def always(self, kind: str | None, seconds: float = 0.0) -> None:
        self.sticky_fault = (kind, seconds) if kind else None

    # -- request checking, as vLLM does it -------------------------------------------------------
    def check(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        unknown = sorted(set(body) - _CHAT_FIELDS - ({"guided_choice"} if self.legacy else {"structured_outputs"}))
        if unknown:
            raise BadRequest(f"unsupported fields for this server: {unknown}")
        if body.get("model") != self.model:
            raise BadRequest(f"The model `{body.get('model')}` does not exist.", 404, "NotFoundError", "model")
        messages = body.get("messages")
        roles = {"system", "user", "assistant"}
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in messages
        ):
            raise BadRequest("messages: a non-empty list of {role, content} objects is required", param="messages")
        if self.legacy:
            choice = body.get("guided_choice")
        else:
            so = body.get("structured_outputs")
            if not isinstance(so, dict) or set(so) - _STRUCTURED_KEYS or len(so) != 1:
                raise BadRequest("structured_outputs must hold exactly one of " + ", ".join(sorted(_STRUCTURED_KEYS)),
                                 param="structured_outputs")
            choice = so.get("choice")
        if not isinstance(choice, list) or not choice or not all(isinstance(c, str) for c in choice):
            raise BadRequest("choice must be a non-empty list of strings", param="structured_outputs.choice")
        return choice

    def answer(self, body: dict[str, Any], choices: list[str]) -> dict[str, Any]:
        user = body["messages"][-1]["content"]
        query = user.split("\n", 1)[0].removeprefix("Message: ")
        label = self.script.get(query, choices[0])
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        with self._lock:
            cached = len(system.split()) if system == self._last_system else 0
            self._last_system = system
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": label}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2,
                      "prompt_tokens_details": {"cached_tokens": cached}},
        }

    def next_fault(self) -> tuple[str | None, float]:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
        return self.sticky_fault or (None, 0.0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(FixtureHandler):
            fixture = fake

            def _error(self, exc: BadRequest) -> None:
                body = {"error": {"message": str(exc), "type": exc.kind, "param": exc.param, "code": exc.status}}
                self._send(exc.status, json.dumps(body).encode())

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                               .encode())
                else:
                    self._error(BadRequest(f"no route {self.path}", 404, "NotFoundError"))

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    self._error(BadRequest(f"no route {self.path}", 404, "NotFoundError"))
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(BadRequest("request body is not valid JSON"))
                    return
                with fake._lock:
                    fake.requests.append({"body": body, "headers": dict(self.headers)})
                try:
                    choices = fake.check(body)
                except BadRequest as exc:
                    self._error(exc)
                    return
                kind, seconds = fake.next_fault()
                if self.slow_or_drop(kind, seconds):
                    return
                if kind in {"500", "429"}:
                    if kind == "429":
                        self._send(429, b'{"error": {"message": "rate limited", "type": "RateLimitError", '
                                        b'"code": 429}}', {"Retry-After": "1"})
                        return
                    self._send(500, b'{"error": {"message": "internal error", "type": "InternalServerError", '
                                    b'"code": 500}}')
                    return
                response = fake.answer(body, choices)
                if kind == "outside":
                    response["choices"][0]["message"]["content"] = "definitely_not_a_label"
                payload = json.dumps(response).encode()
                if kind == "malformed":
                    payload = payload[: len(payload) // 2]
                self._send(200, payload)

        return Handler
