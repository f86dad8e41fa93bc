"""The pooled fast path of ``post_json`` (the connection pool beside the client) and its one exception: a
proxy named in the environment, where the request must go through the client, which routes it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.errors import ProviderUnavailable, RequestRejected
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


# -- TLS on the pool's own network layer (router/providers/_net.py) ------------------------------------------
@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[tuple[FakeOpenAI, Path]]:
    """A FakeOpenAI behind TLS, with a self-signed certificate for 127.0.0.1 (made by the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command line tool")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeOpenAI()
    fake._server.socket = context.wrap_socket(fake._server.socket, server_side=True)
    with fake:
        yield fake, cert


def _post_https(fake: FakeOpenAI) -> dict[str, object]:
    async def go() -> dict[str, object]:
        clients = HttpClients()
        try:
            url = f"https://127.0.0.1:{fake.port}/v1/chat/completions"
            first = await post_json(clients, "openai", url, {"authorization": f"Bearer {fake.api_key}"}, BODY, 5.0)
            # The second call reuses the kept-alive TLS connection.
            await post_json(clients, "openai", url, {"authorization": f"Bearer {fake.api_key}"}, BODY, 5.0)
            return first
        finally:
            await clients.aclose()

    return asyncio.run(go())


def test_https_through_the_pool_verifies_the_certificate(tls_fake: tuple[FakeOpenAI, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake, cert = tls_fake
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust this certificate, as a private CA would be
    assert _post_https(fake)["object"] == "chat.completion"
    assert len(fake.requests) == 2


def test_https_with_an_untrusted_certificate_is_a_connection_failure(tls_fake: tuple[FakeOpenAI, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake, _ = tls_fake
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProviderUnavailable, match="connection failed: ConnectError") as caught:
        _post_https(fake)
    assert caught.value.reason == "connection"
    assert fake.requests == []


def test_a_connection_refused_and_a_dropped_answer_are_connection_failures() -> None:
    with FakeOpenAI() as fake:
        port = fake.port
        fake.fault("drop")
        with pytest.raises(ProviderUnavailable, match="connection failed"):
            _post(fake)
    with pytest.raises(ProviderUnavailable, match="connection failed: ConnectError"):
        asyncio.run(_refused(port))


async def _refused(port: int) -> None:
    clients = HttpClients()
    try:
        await post_json(clients, "openai", f"http://127.0.0.1:{port}/v1/chat/completions", {}, BODY, 5.0)
    finally:
        await clients.aclose()


def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    async def go(fake: FakeOpenAI) -> None:
        clients = HttpClients()
        url = f"{fake.url}/chat/completions"
        try:
            await post_json(clients, "openai", url, {"authorization": f"Bearer {fake.api_key}"}, BODY, 5.0)
            with fake._lock:  # the server closes its side of the idle kept-alive connection
                for conn in fake._connections:
                    conn.shutdown(socket.SHUT_RDWR)
            await asyncio.sleep(0.05)
            # The pool sees it readable (closed) and opens a new one, rather than failing on the dead one.
            data = await post_json(clients, "openai", url, {"authorization": f"Bearer {fake.api_key}"}, BODY, 5.0)
            assert data["object"] == "chat.completion"
        finally:
            await clients.aclose()

    with FakeOpenAI() as fake:
        asyncio.run(go(fake))
        assert len(fake.requests) == 2
