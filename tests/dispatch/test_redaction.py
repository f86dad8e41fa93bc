"""No secret reaches a trace, a log or an error body: provider error text is masked before it is stored.

The fake providers here are real HTTP servers that answer 401 or 500 with an error message quoting
the key they were sent, as some providers and proxies do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from router._redact import MASK, redact, register_secret
from router.dispatch import Dispatcher, model_routing_from_dict
from router.dispatch._trace import MemorySink
from router.dispatch.demo import build_registry
from router.errors import FallbacksExhausted, ProviderError, SkillFailed
from router.providers._http import error_for_status
from router.testing import FakeAnthropic, FakeGemini, FakeOpenAI
from router.testing._loopback import ApiError
from tests.dispatch.conftest import Sleeps

# The OpenAI key is shaped like nothing in particular: only its registration as a configured key masks it.
ECHO_KEYS = {"ECHO_OPENAI_KEY": "correct-horse-battery-staple",
             "ECHO_ANTHROPIC_KEY": "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm",
             "ECHO_GEMINI_KEY": "AIzaSyD4-x9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0L"}
_AUTH_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


class _Echo:
    """Answers every request with ``status`` and a message that quotes the credentials it received."""

    status = 401

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        sent = {k: v for k, v in headers.items() if k in _AUTH_HEADERS}
        raw = next(iter(sent.values()), "").removeprefix("Bearer ")
        kind = "authentication" if self.status == 401 else "server"
        raise ApiError(self.status, kind, f"Incorrect API key provided: {raw}. You sent {json.dumps(sent)}")


class EchoOpenAI(_Echo, FakeOpenAI):
    pass


class EchoAnthropic(_Echo, FakeAnthropic):
    pass


class EchoGemini(_Echo, FakeGemini):
    pass


@dataclass
class Echoes:
    openai: EchoOpenAI
    anthropic: EchoAnthropic
    gemini: EchoGemini

    def routing(self, **extra: Any) -> dict[str, Any]:
        ref = {"timeout_s": 2, "max_tokens": 64}
        return {
            "providers": {
                "openai": {"kind": "openai", "base_url": self.openai.url, "api_key_env": "ECHO_OPENAI_KEY"},
                "anthropic": {"kind": "anthropic", "base_url": self.anthropic.url, "api_key_env": "ECHO_ANTHROPIC_KEY"},
                "gemini": {"kind": "gemini", "base_url": self.gemini.url, "api_key_env": "ECHO_GEMINI_KEY"},
            },
            "defaults": {"extraction": {"provider": "openai", "model": "gpt-5.4-nano", **ref}},
            "fallbacks": {"extraction": [{"provider": "gemini", "model": "gemini-2.5-flash", **ref},
                                         {"provider": "anthropic", "model": "claude-haiku-4-5", **ref}]},
            "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05},
            **extra,
        }


@pytest.fixture
def echoes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Echoes]:
    """openai answers 401, gemini and anthropic 500; each quotes the key it was sent."""
    for name, value in ECHO_KEYS.items():
        monkeypatch.setenv(name, value)
    servers = Echoes(EchoOpenAI(api_key=None), EchoAnthropic(api_key=None), EchoGemini(api_key=None))
    servers.anthropic.status = servers.gemini.status = 500
    for s in (servers.openai, servers.anthropic, servers.gemini):
        s.start()
    yield servers
    for s in (servers.openai, servers.anthropic, servers.gemini):
        s.stop()


def assert_no_key(text: str) -> None:
    for key in ECHO_KEYS.values():
        for part in (key, key[:12], key[-12:]):
            assert part not in text, f"{part!r} leaked"


def test_an_echoed_key_reaches_no_trace_record_log_or_error(echoes: Echoes,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), \
            Dispatcher(model_routing_from_dict(echoes.routing(trace={"sink": "memory"})), build_registry(),
                       sleep=Sleeps()) as d:
        with pytest.raises(FallbacksExhausted) as info:
            d.dispatch("u", "transfer", text="send 20 dollars to sam")
        assert isinstance(d.sink, MemorySink)
        records = list(d.sink.records)
    assert [e.reason for e in info.value.errors] == ["http_401", "http_500", "http_500"]
    assert echoes.openai.requests and echoes.gemini.requests and echoes.anthropic.requests  # keys were sent
    errors = [r["error"] for r in records if r["kind"] == "call"]
    assert len(errors) == 1 + 4 + 4  # the 401 is not retried; each 500 is tried 1 + 3 times
    assert all("Incorrect API key provided: " + MASK in e for e in errors), errors  # the text is kept, masked
    assert_no_key(json.dumps(records))
    assert_no_key(str(info.value) + "".join(str(e) for e in info.value.errors))
    assert_no_key(caplog.text + "".join(str(r.args) for r in caplog.records))


def test_credential_shapes_are_masked() -> None:
    cases = {
        "Authorization: Bearer abc.DEF-123_xyz": f"Authorization: Bearer {MASK}",
        "authorization: bearer abcdefghijklmnopqrstuvwx": f"authorization: bearer {MASK}",
        "key sk-proj-AbC123dEf456 is invalid": f"key {MASK} is invalid",
        "x-goog-api-key: AIzaSyA1b2C3d4E5f6": f"x-goog-api-key: {MASK}",
        "GET /v1/models?key=secretvalue123&alt=json": f"GET /v1/models?key={MASK}&alt=json",
        '{"api_key": "0123456789abcdef"}': f'{{"api_key": "{MASK}"}}',
        "token 9f8e7d6c5b4a39281706f5e4d3c2b1a0ffee": f"token {MASK}",
    }
    for text, masked in cases.items():
        assert redact(text) == masked, text
    for kept in ("Missing bearer authentication", "model claude-sonnet-4-5-20250929 not found",
                 "no API key: environment variable 'OPENAI_API_KEY' (api_key_env) is not set",
                 "HTTP 429 rate_limit_exceeded: Rate limit reached; retry later.", "x" * 64):
        assert redact(kept) == kept


def test_a_configured_secret_is_masked_whatever_its_shape() -> None:
    secret = "plain words as a key 42"
    assert redact(f"bad key {secret}!") == f"bad key {secret}!"
    register_secret(secret)
    assert redact(f"bad key {secret}!") == f"bad key {MASK}!"
    register_secret("abc")  # too short to mask safely: ignored
    assert redact("abc def") == "abc def"


def test_the_key_is_masked_before_the_message_is_cut() -> None:
    key = "hunter2-hunter2-hunter2-hunter2"
    register_secret(key)
    message = "x" * 290 + " " + key  # the 300-character cut falls inside the key
    response = httpx.Response(500, json={"error": {"message": message, "type": "server_error"}})
    err = error_for_status("openai", response)
    assert "hunter2" not in str(err) and str(err).endswith(" [redacted")  # the mask is cut, not the key


def test_every_provider_and_handler_error_is_masked() -> None:
    assert MASK in str(ProviderError("x", "echo: sk-ant-abcdefgh12345"))
    assert MASK in str(SkillFailed("pay", "handler raised: Bearer ghp_abcdefgh12345678", "handler_error"))
