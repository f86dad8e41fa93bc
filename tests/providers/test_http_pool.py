"""The pooled fast path of ``post_json`` (the connection pool beside the client) and its one exception: a
proxy named in the environment, where the request must go through the client, which routes it."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import RequestRejected
from router.providers._http import HttpClients, post_json
from router.testing import FakeOpenAI

BODY = {"model": "gpt-5.4-nano", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 8}


def _post(fake: FakeOpenAI) -> dict[str, object]:
    async def go() -> dict[str, object]:
        clients = HttpClients()
        try:
            return await post_json(clients, "openai", f"{fake.url}/chat/completions",
                                   {"authorization": f"Bearer {fake.api_key}"}, BODY, 5.0)
        finally:
            await clients.aclose()

    return asyncio.run(go())


def test_without_a_proxy_the_request_goes_straight_to_the_server_on_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI() as fake:
        data = _post(fake)
        assert data["object"] == "chat.completion"
        sent = fake.requests[-1]
        assert sent["path"] == "/v1/chat/completions"  # origin-form: no proxy in between
        assert sent["headers"]["content-type"] == "application/json"
        assert sent["headers"]["user-agent"] == "tiered-router"


def test_a_proxy_in_the_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as fake, FakeOpenAI() as proxy:
        # The second fake stands in for the proxy: a proxied request reaches it with the absolute URL of the
        # real server as its target (absolute-form), which it answers 404, naming that URL.
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises(RequestRejected, match=r"HTTP 404.*http://127\.0\.0\.1:\d+/v1/chat/completions"):
            _post(fake)
        assert fake.requests == []
        assert proxy.requests[-1]["path"] == f"{fake.url}/chat/completions"
