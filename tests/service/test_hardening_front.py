"""The front door of a real `router serve` process: caps, probes, slow and idle clients, auth, metric labels.

Two servers per module run: ``front`` (dispatch on, a provider that holds every call until the
test releases it, an API key, long connection timeouts so that only what a test does fills a
cap) and ``short`` (short connection timeouts, ``max_in_flight=1``). Slow and idle clients are
raw sockets; everything else goes through httpx.
"""

from __future__ import annotations

import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.testing import FakeOpenAI, ServeProcess
from tests.service.conftest import Running

KEY = "front-door-key"
AUTH = {"Authorization": f"bearer {KEY}"}  # lower case: the scheme is case-insensitive
STAGES = ("routing", "extraction", "formatting", "diagnostic")


class GatedOpenAI(FakeOpenAI):
    """A provider that holds every call until ``gate`` is set: dispatches stuck for as long as a test needs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.waiting = 0

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        with self._lock:
            self.waiting += 1
        try:
            self.gate.wait(120)
        finally:
            with self._lock:
                self.waiting -= 1
        return super().handle(method, path, headers, body)


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def raw(server: ServeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the 30 s socket timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def readable(socks: list[socket.socket], timeout_s: float) -> bool:
    """Whether any socket has data or an end of file. poll, not select: select() refuses descriptors
    past 1023, which a process holding a thousand idle connections has."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def trickle_until_answered(sock: socket.socket, byte: bytes = b"a") -> None:
    """Send one byte every 0.2 s (each would reset a plain idle timer) until the server answers."""
    deadline = time.monotonic() + 30
    while not readable([sock], 0.2):
        assert time.monotonic() < deadline, "the server never answered the trickling client"
        sock.sendall(byte)


@pytest.fixture(scope="module")
def gated() -> Iterator[GatedOpenAI]:
    fake = GatedOpenAI(api_key="sk-front").start()
    yield fake
    fake.gate.set()
    fake.stop()


@pytest.fixture(scope="module")
def front(mini_index: Path, gated: GatedOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    stage = {"provider": "openai", "model": "gpt-5.4-nano", "timeout_s": 60, "max_tokens": 256}
    routing = tmp_path_factory.mktemp("front") / "models.yaml"
    routing.write_text(yaml.safe_dump({
        "providers": {"openai": {"kind": "openai", "base_url": gated.url, "api_key_env": "FRONT_OPENAI_KEY"}},
        "defaults": dict.fromkeys(STAGES, stage), "fallbacks": dict.fromkeys(STAGES, []),
        "retry": {"max_retries": 0}, "trace": {"sink": "memory"}}))
    with pytest.MonkeyPatch.context() as env:  # the child process keeps what it started with
        env.setenv("FRONT_OPENAI_KEY", "sk-front")
        env.setenv("ROUTER_FRONT_KEY", KEY)
        server = ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--api-key-env", "ROUTER_FRONT_KEY",
                              "--skills", "router.dispatch.demo:registry", "--allow-self-approval", "on",
                              "--model-routing", str(routing),
                              "--max-in-flight", "4", "--max-dispatch-in-flight", "4", "--request-timeout-s", "120",
                              "--header-timeout-s", "120", "--body-timeout-s", "120").start()
    yield server
    server.stop()


@pytest.fixture
def client(front: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture
def stuck_dispatches(front: ServeProcess, gated: GatedOpenAI, client: httpx.Client) -> Iterator[list[httpx.Response]]:
    """max_dispatch_in_flight (4) dispatches waiting on the provider; released, and answered 200, at teardown."""
    gated.gate.clear()
    answers: list[httpx.Response] = []

    def dispatch(i: int) -> None:
        with httpx.Client(base_url=front.url, headers=AUTH, timeout=120) as c:
            answers.append(c.post("/v1/dispatch", json={"session_id": f"stuck-{i}-{time.monotonic_ns()}",
                                                        "skill": "balance", "text": "what is my checking balance"}))

    threads = [threading.Thread(target=dispatch, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: gated.waiting == 4, "4 dispatches waiting on the provider")
        assert metric(client, "router_dispatch_in_flight_requests") == 4
        yield answers
    finally:
        gated.gate.set()
        for t in threads:
            t.join(60)
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert all(r.json()["status"] == "ok" for r in answers)


def stalled_upload(server: ServeProcess, headers: dict[str, str] | None = None) -> socket.socket:
    """A POST /v1/classify whose body stops after 9 of its 100 bytes."""
    sock = raw(server)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}"
                 "content-length: 100\r\n\r\n{\"text\": ".encode())
    return sock


# -- item 2: probes and metrics are never refused; dispatch cannot starve classify --------------------
def test_stuck_dispatches_refuse_neither_probes_nor_classify(stuck_dispatches: list[httpx.Response],
                                                             client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert [client.get(path).status_code for _ in range(100)] == [200] * 100, path
    statuses = [client.post("/v1/classify", json={"text": "wake me up at 7"}).status_code for _ in range(100)]
    assert statuses == [200] * 100
    # The dispatch lane itself is full: the next dispatch, approval or session request waits its turn.
    r = client.post("/v1/dispatch", json={"session_id": "one-more", "skill": "balance", "params": {}})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "max_dispatch_in_flight=4" in r.json()["detail"]
    assert client.get("/v1/sessions/one-more").status_code == 503


def test_a_full_classify_lane_refuses_neither_probes_nor_dispatch(front: ServeProcess, client: httpx.Client) -> None:
    uploads = [stalled_upload(front, AUTH) for _ in range(4)]  # max_in_flight=4 slots held by stalled bodies
    try:
        wait_for(lambda: metric(client, "router_in_flight_requests") == 4, "4 stalled uploads in flight")
        r = client.post("/v1/classify", json={"text": "hi"})
        assert r.status_code == 503 and "max_in_flight=4" in r.json()["detail"]
        for path in ("/healthz", "/readyz", "/metrics"):
            assert [client.get(path).status_code for _ in range(100)] == [200] * 100, path
        r = client.post("/v1/dispatch", json={"session_id": "lane", "skill": "transfer",
                                              "params": {"amount": 1, "to_account": "ann"}})
        assert r.status_code == 200 and r.json()["status"] == "pending_approval"
    finally:
        for sock in uploads:
            sock.close()
    wait_for(lambda: metric(client, "router_in_flight_requests") == 0, "the slots to be freed")
    assert client.post("/v1/classify", json={"text": "hi"}).status_code == 200


# -- item 4: a thousand idle connections do not stop new requests -------------------------------------
def test_a_thousand_idle_connections_do_not_stop_new_requests(front: ServeProcess) -> None:
    # Each idle connection is a descriptor here and one in the server (which raises its own soft
    # limit to the hard one at start): this process needs 1,000 and some to spare.
    count, needed = 1000, 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-files hard limit ({hard}) is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    idle = [raw(front) for _ in range(count)]
    try:
        # No keep-alive: each request on a new connection, which the server still accepts and answers.
        with httpx.Client(base_url=front.url, headers=AUTH, timeout=30,
                          limits=httpx.Limits(max_keepalive_connections=0)) as c:
            for i in range(100):
                assert c.get("/healthz").status_code == 200
                assert c.post("/v1/classify", json={"text": f"set an alarm for {i} am"}).status_code == 200
        # They were all still open (header_timeout_s=120 here): nothing to read, not even an end of file.
        assert not readable(idle, 0)
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- item 12: the bearer scheme in any case; a metric label per route template ------------------------
@pytest.mark.parametrize(("value", "status"), [
    (f"bearer {KEY}", 200), (f"BEARER {KEY}", 200), (f"Bearer  {KEY}", 200), (f"Bearer {KEY}x", 401),
    (f"Bearer {KEY.upper()}", 401), (f"Basic {KEY}", 401), ("bearer", 401), (f"bearer{KEY}", 401), (KEY, 401),
])
def test_the_bearer_scheme_is_case_insensitive(front: ServeProcess, value: str, status: int) -> None:
    r = httpx.post(f"{front.url}/v1/classify", json={"text": "hi"}, headers={"Authorization": value}, timeout=30)
    assert r.status_code == status, r.text
    if status == 401:
        assert "$ROUTER_FRONT_KEY" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"


def test_dispatch_routes_are_counted_under_their_own_labels(client: httpx.Client) -> None:
    labels = {"/v1/dispatch": "200", "/v1/approvals/{approval_id}/approve": "200",
              "/v1/approvals/{approval_id}/reject": "200", "/v1/sessions/{session_id}": "200",
              "other": "404"}
    before = {endpoint: metric(client, "router_requests_total", endpoint=endpoint, status=status)
              for endpoint, status in labels.items()}
    session = f"labels-{time.monotonic_ns()}"
    ids = []
    for _ in range(2):
        r = client.post("/v1/dispatch", json={"session_id": session, "skill": "transfer",
                                              "params": {"amount": 2, "to_account": "ann"}})
        assert r.status_code == 200 and r.json()["status"] == "pending_approval"
        ids.append(r.json()["approval_id"])
    assert client.post(f"/v1/approvals/{ids[0]}/approve").status_code == 200
    assert client.post(f"/v1/approvals/{ids[1]}/reject").status_code == 200
    assert client.get(f"/v1/sessions/{session}").status_code == 200
    assert client.get("/v1/nowhere").status_code == 404
    after = {endpoint: metric(client, "router_requests_total", endpoint=endpoint, status=status)
             for endpoint, status in labels.items()}
    assert {e: after[e] - before[e] for e in labels} == {
        "/v1/dispatch": 2, "/v1/approvals/{approval_id}/approve": 1, "/v1/approvals/{approval_id}/reject": 1,
        "/v1/sessions/{session_id}": 1, "other": 1}
    text = client.get("/metrics").text
    assert ids[0] not in text and session not in text  # raw ids never become label values


# -- item 4: slow and idle clients are cut off at their timeouts -------------------------------------
@pytest.fixture(scope="module")
def short(mini_index: Path) -> Iterator[ServeProcess]:
    server = ServeProcess("--index", str(mini_index), "--encoder-threads", "1", "--max-in-flight", "1",
                          "--request-timeout-s", "60", "--header-timeout-s", "2", "--keep-alive-timeout-s", "1",
                          "--body-timeout-s", "1", "--max-header-bytes", "8192").start()
    yield server
    server.stop()


def test_idle_connections_are_closed(short: ServeProcess) -> None:
    fresh = [raw(short) for _ in range(50)]  # opened, never sent a byte: closed at header_timeout_s
    used = [raw(short) for _ in range(50)]  # one request, then idle: closed at keep_alive_timeout_s
    for sock in used:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        for sock in fresh:
            assert read_to_close(sock) == b""
        for sock in used:
            answer = read_to_close(sock)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')
    finally:
        for sock in fresh + used:
            sock.close()


def test_slow_headers_get_408_and_the_connection_closed(short: ServeProcess) -> None:
    with httpx.Client(base_url=short.url, timeout=30) as c:
        before = metric(c, "router_rejected_total", limit="header_timeout_s")
        with raw(short) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            trickle_until_answered(sock)
            answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
        assert answer.endswith(b'{"detail":"request headers not received within header_timeout_s=2"}')
        # Bytes trickled after a response (here, stray line ends) restart the clock too.
        with raw(short) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            trickle_until_answered(sock, b"\r\n")
            assert read_to_close(sock).startswith(b"HTTP/1.1 200")
        assert metric(c, "router_rejected_total", limit="header_timeout_s") == before + 1


@pytest.mark.parametrize("trickle", [False, True])
def test_a_slow_body_gets_408_and_frees_its_slot(short: ServeProcess, trickle: bool) -> None:
    with httpx.Client(base_url=short.url, timeout=30) as c:
        before = metric(c, "router_rejected_total", limit="body_timeout_s")
        with stalled_upload(short) as sock:
            if trickle:  # a byte every 0.2 s: within the body, no pause is long, the whole is
                trickle_until_answered(sock, b" ")
            answer = read_to_close(sock)
        # 408 at body_timeout_s=1, not 504 at request_timeout_s=60: the only slot is free again.
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
        assert answer.endswith(b'{"detail":"request body not received within body_timeout_s=1"}')
        assert metric(c, "router_rejected_total", limit="body_timeout_s") == before + 1
        assert c.post("/v1/classify", json={"text": "hi"}).status_code == 200


@pytest.mark.parametrize("size", [20_000, 1_000_000])
def test_headers_over_max_header_bytes_get_431(short: ServeProcess, size: int) -> None:
    # 20 kB come in one read, measured once parsed; 1 MB is cut off while still arriving.
    with raw(short) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * size + b"\r\n\r\n")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"connection: close" in answer
    assert answer.endswith(b'{"detail":"request headers are over max_header_bytes=8192"}')
    r = httpx.get(f"{short.url}/healthz", headers={"x-big": "a" * 4000}, timeout=30)
    assert r.status_code == 200


# -- a late event loop does not cut a request already waiting -----------------------------------------
def read_response(sock: socket.socket) -> bytes:
    """One response with a content-length (b"" if the server closed the connection instead)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := sock.recv(65536)):
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@contextmanager
def loop_held(running: Running, seconds: float) -> Iterator[None]:
    """Hold the server's event loop for ``seconds`` in a socket-reading callback (where it parses
    requests), as a long step there would; the block runs once the loop is held."""
    loop = running.server.servers[0].get_loop()
    held = threading.Event()
    reader, writer = socket.socketpair()

    def hold() -> None:
        loop.remove_reader(reader)
        held.set()
        time.sleep(seconds)

    with reader, writer:
        loop.call_soon_threadsafe(loop.add_reader, reader, hold)
        writer.send(b"x")
        assert held.wait(10)
        yield


def test_a_late_loop_still_serves_requests_waiting_on_idle_connections(start_server: Callable[..., Running]) -> None:
    # While the loop is held, a request arrives on each connection and both timeouts come due. The
    # loop runs due timers before it reads the sockets again: the requests must be read first.
    server = start_server(keep_alive_timeout_s=1, header_timeout_s=1)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as kept, \
            socket.create_connection(("127.0.0.1", port), timeout=30) as fresh:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(kept).startswith(b"HTTP/1.1 200")  # its keep-alive timer (1 s) is running
        wait_for(lambda: len(server.server.server_state.connections) == 2, "both connections accepted")
        with loop_held(server, 1.5):  # the fresh one's header clock (1 s) started when it was accepted
            kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            fresh.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert read_response(kept).startswith(b"HTTP/1.1 200")
            assert read_response(fresh).startswith(b"HTTP/1.1 200")
