"""Index hot reload: POST /v1/admin/reload and SIGHUP swap in a new build while the old one serves.

A second build of the mini intents with one more intent (``pizza``) stands for "the intents changed":
which index answered a request shows in its Decision (``pizza`` exists only in the new one) and in the
response's ``index`` label, so the tests can tell that a request never mixes the two.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router import Builder, Router, RouterConfig
from router._config import LimitsConfig
from router.service._config import ServeConfig
from router.service._service import ClassifierService, ServedIndex
from router.testing import ServeProcess
from router.tiers._chain import on_a_thread
from tests.service.conftest import Running

KEY_ENV = "ROUTER_TEST_ADMIN_KEY"
KEY = "reload-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
PIZZA = "order a large pepperoni pizza for delivery"
PIZZA_EXAMPLES = [
    "order a large pepperoni pizza", "i want a pizza delivered", "get me a margherita pizza",
    "can you order pizza for dinner", "order two pizzas from dominos", "i'd like a pizza with extra cheese",
    "place a pizza order for delivery", "order a veggie pizza please", "buy a pizza for tonight",
    "order pizza to my house", "get a medium hawaiian pizza", "i want to order a pizza",
]
TEXTS = ["what's my balance", "will it snow tomorrow", "wake me at 7", PIZZA]


def with_pizza(config: RouterConfig, folder: Path) -> RouterConfig:
    """``config`` with a ``pizza`` intent added to its intents file (written into ``folder``)."""
    data = yaml.safe_load(Path(str(config.intents)).read_text())
    data["intents"].append({"name": "pizza", "description": "order a pizza", "examples": PIZZA_EXAMPLES})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "intents.yaml").write_text(yaml.safe_dump(data))
    return config.model_copy(update={"intents": str(folder / "intents.yaml")})


@pytest.fixture(scope="module")
def pizza_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    """A second build named ``mini`` too, with one more intent."""
    root = tmp_path_factory.mktemp("reload")
    return Builder(with_pizza(mini_config, root)).build(root / "mini").folder


def version_of(folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    return str(manifest["manifest_sha256"][:12])


def index_info(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/readyz", timeout=10).json()["index"])


def metrics_index(url: str) -> list[dict[str, str]]:
    """The label sets of router_index_info in /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [dict(re.findall(r'(\w+)="([^"]*)"', labels))
            for labels in re.findall(r"^router_index_info\{(.*)\} 1\.0$", text, re.MULTILINE)]


def classify(url: str, text: str) -> tuple[str, str]:
    """(intent, index label) of one text."""
    body = httpx.post(f"{url}/v1/classify", json={"text": text}, headers=AUTH, timeout=30).json()
    return body["decisions"][0]["intent"], body["index"]


def reload(url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/admin/reload", json=body, headers=AUTH if headers is None else headers, timeout=120)


def flip_a_byte(path: Path) -> None:
    """Corrupt a file, keeping its size: only its sha256 in the manifest tells."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_copy(source: Path, target: Path) -> Path:
    """A copy of the index ``source`` with a byte flipped in head.npz."""
    shutil.copytree(source.resolve(), target)
    flip_a_byte(target / "head.npz")
    return target


@pytest.fixture
def keyed(start_server: Callable[..., Running], monkeypatch: pytest.MonkeyPatch) -> Running:
    monkeypatch.setenv(KEY_ENV, KEY)
    return start_server(api_key_env=KEY_ENV)


def _decisions(url: str) -> tuple[list[dict[str, Any]], str]:
    """The Decisions of TEXTS (without their timings) and the index label of the answer."""
    body = httpx.post(f"{url}/v1/classify", json={"texts": TEXTS}, headers=AUTH, timeout=30).json()
    decisions = [{k: v for k, v in d.items() if k not in ("latency_us", "id")} for d in body["decisions"]]
    return decisions, str(body["index"])


def test_reload_swaps_the_index_named_in_readyz_classify_and_metrics(keyed: Running, mini_index: Path,
                                                                      pizza_index: Path) -> None:
    url, old, new = keyed.url, version_of(mini_index), version_of(pizza_index)
    assert old != new
    first = index_info(url)
    assert first["version"] == old and first["name"] == "mini"
    assert metrics_index(url) == [first]
    before = _decisions(url)
    assert before[1] == f"mini@{old}" and "pizza" not in [d["intent"] for d in before[0]]

    answer = reload(url, {"index": str(pizza_index)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "reloaded" and body["previous"] == first and body["seconds"] >= 0
    built_at = json.loads((pizza_index / "manifest.json").read_text())["built_at"]
    assert body["index"] == {"name": "mini", "version": new, "built_at": built_at}
    assert index_info(url) == body["index"]
    assert metrics_index(url) == [body["index"]]  # the old series is gone
    after = _decisions(url)
    assert after[1] == f"mini@{new}" and after[0][-1]["intent"] == "pizza"

    # No body: the configured index (--index), read from disk again; it answers as it did.
    back = reload(url)
    assert back.status_code == 200 and back.json()["index"] == first and back.json()["previous"] == body["index"]
    assert _decisions(url) == before


@pytest.mark.parametrize("spoil", ["corrupt", "stale", "missing", "not an index"])
def test_an_index_that_fails_its_checks_is_refused_and_the_old_one_keeps_serving(
        keyed: Running, pizza_index: Path, tmp_path: Path, spoil: str) -> None:
    url = keyed.url
    serving, before = index_info(url), _decisions(url)
    if spoil == "corrupt":
        target, why = corrupt_copy(pizza_index, tmp_path / "mini"), "head.npz does not match the sha256"
    elif spoil == "stale":  # an index of an older format: StaleIndexError
        target = tmp_path / "mini"
        shutil.copytree(pizza_index.resolve(), target)
        manifest = json.loads((target / "manifest.json").read_text())
        (target / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
        why = "has format_version 3, this router reads 4"
    elif spoil == "missing":
        target, why = tmp_path / "nowhere" / "mini", "no index at"
    else:
        (tmp_path / "empty").mkdir()
        target, why = tmp_path / "empty", "missing manifest.json"
    answer = reload(url, {"index": str(target)})
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["status"] == "refused" and why in body["detail"] and body["serving"] == serving
    assert index_info(url) == serving and metrics_index(url) == [serving]
    assert _decisions(url) == before  # the old index answers as before


def test_a_corrupted_build_of_the_configured_name_is_refused(start_server: Callable[..., Running],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             pizza_index: Path, tmp_path: Path) -> None:
    """The serving index's own files edited on disk: a reload of the configured name refuses them."""
    monkeypatch.setenv(KEY_ENV, KEY)
    live = tmp_path / "mini"
    shutil.copytree(pizza_index.resolve(), live)
    server = start_server(index=live, api_key_env=KEY_ENV)
    serving = index_info(server.url)
    flip_a_byte(live / "head.npz")
    answer = reload(server.url)
    assert answer.status_code == 409 and "does not match the sha256" in answer.json()["detail"]
    assert index_info(server.url) == serving
    assert classify(server.url, PIZZA) == ("pizza", f"mini@{serving['version']}")


def test_an_index_with_other_request_limits_is_refused_saying_a_restart_serves_them(
        keyed: Running, mini_config: RouterConfig, tmp_path: Path) -> None:
    """The /v1/classify body model (and the OpenAPI schema) states the limits of the start: a reload keeps them."""
    served = LimitsConfig()  # the mini index's
    other = LimitsConfig(max_text_chars=served.max_text_chars * 2, max_batch=served.max_batch)
    folder = Builder(mini_config.model_copy(update={"limits": other})).build(tmp_path / "mini").folder
    url, serving = keyed.url, index_info(keyed.url)
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    answer = reload(url, {"index": str(folder)})
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert f"limits.max_text_chars={other.max_text_chars} (serving {served.max_text_chars})" in detail
    assert "max_batch" not in detail and "restart the server to serve new limits" in detail
    assert index_info(url) == serving and httpx.get(f"{url}/openapi.json", timeout=10).json() == schema
    too_long = "a" * (served.max_text_chars + 1)  # what the refused index would take: the schema still refuses it
    refused = httpx.post(f"{url}/v1/classify", json={"text": too_long}, headers=AUTH, timeout=30)
    assert refused.status_code == 422 and "text" in refused.text


def test_admin_routes_need_a_configured_key(server: Running, mini_index: Path) -> None:
    answer = reload(server.url, {"index": str(mini_index)}, headers={})
    assert answer.status_code == 403 and "admin routes need an API key" in answer.json()["detail"]
    assert "--api-key-env" in answer.json()["detail"]
    assert reload(server.url, headers=AUTH).status_code == 403  # a key the server does not have changes nothing
    assert index_info(server.url)["version"] == version_of(mini_index)


def test_admin_routes_need_the_key(keyed: Running, pizza_index: Path, mini_index: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        answer = reload(keyed.url, {"index": str(pizza_index)}, headers=headers)
        assert answer.status_code == 401 and "bearer token" in answer.json()["detail"]
    assert index_info(keyed.url)["version"] == version_of(mini_index)


@pytest.mark.parametrize(("body", "needle"), [
    ({"index": ""}, "at least 1 character"), ({"index": 3}, "valid string"), ({"folder": "x"}, "Extra inputs"),
])
def test_a_bad_reload_body_is_refused_naming_the_field(keyed: Running, body: dict[str, Any], needle: str) -> None:
    answer = reload(keyed.url, body)
    assert answer.status_code == 422 and needle in json.dumps(answer.json())


def test_the_reload_route_is_in_the_schema(keyed: Running) -> None:
    schema = httpx.get(f"{keyed.url}/openapi.json", timeout=10).json()
    route = schema["paths"]["/v1/admin/reload"]["post"]
    assert {"200", "401", "403", "409", "422"} <= set(route["responses"])
    assert schema["components"]["schemas"]["ReadyResponse"]["properties"]["index"] == {
        "$ref": "#/components/schemas/IndexInfo"}


async def _load_while_swapping(url: str, indexes: list[Path], stop_after: int) -> tuple[list[tuple[str, str]], int]:
    """16 clients classify PIZZA without pause while the index is swapped ``stop_after`` times; returns every
    answer's (intent, index label) and the number of swaps."""
    answers: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        while not done.is_set():
            response = await http.post("/v1/classify", json={"text": PIZZA})
            assert response.status_code == 200, response.text
            body = response.json()
            answers.append((body["decisions"][0]["intent"], body["index"]))

    async def swapper(http: httpx.AsyncClient) -> int:
        swaps = 0
        for i in range(stop_after):
            await asyncio.sleep(0.3)
            response = await http.post("/v1/admin/reload", json={"index": str(indexes[i % len(indexes)])})
            assert response.status_code == 200, response.text
            swaps += 1
        await asyncio.sleep(0.3)
        done.set()
        return swaps

    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60,
                                 limits=httpx.Limits(max_connections=32)) as http:
        swaps, *_ = await asyncio.gather(swapper(http), *(client(http) for _ in range(16)))
    assert isinstance(swaps, int)
    return answers, swaps


def test_requests_in_flight_finish_on_the_index_they_started_on(keyed: Running, mini_index: Path,
                                                               pizza_index: Path) -> None:
    """Under load, every answer is wholly one index's: pizza only where the label names the pizza build.
    Queries queued at the micro-batcher when a swap lands still run on their own index's tiers (a job
    carries its tier), and each replaced Router is closed once its last request is done."""
    old, new = f"mini@{version_of(mini_index)}", f"mini@{version_of(pizza_index)}"
    answers, swaps = asyncio.run(_load_while_swapping(keyed.url, [pizza_index, mini_index], stop_after=4))
    assert swaps == 4 and len(answers) > 16
    by_label: dict[str, set[str]] = {}
    for intent, label in answers:
        by_label.setdefault(label, set()).add(intent)
    assert by_label.get(new) == {"pizza"} and old in by_label and "pizza" not in by_label[old]
    service = keyed.service
    deadline = time.monotonic() + 10
    while service._retired and time.monotonic() < deadline:  # retirements run on the server's loop
        time.sleep(0.05)
    assert not service._retired and service.serving.users == 0
    assert service.serving.index.label == old  # 4 swaps: pizza, mini, pizza, mini


def test_concurrent_reloads_run_one_after_the_other(keyed: Running, mini_index: Path, pizza_index: Path) -> None:
    start = index_info(keyed.url)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda target: reload(keyed.url, {"index": str(target)}), [pizza_index, mini_index]))
    assert [a.status_code for a in answers] == [200, 200]
    # A chain, in one order or the other: the second reload replaced what the first put in (none overlapped).
    # The mini index may come first, so that both reloads name the same "previous": try both orders.
    bodies = [a.json() for a in answers]
    chains = [(a, b) for a, b in permutations(bodies) if a["previous"] == start and b["previous"] == a["index"]]
    assert chains, bodies
    assert index_info(keyed.url) in [b["index"] for _, b in chains]


def test_a_replaced_index_is_closed_after_its_last_request(mini_router: Router) -> None:
    async def scenario() -> None:
        served = ServedIndex(mini_router.with_compute(on_a_thread))
        served.users += 1  # a request in flight holds it
        retiring = asyncio.create_task(served.retire())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not retiring.done() and not served.router._closed
        served.release()  # the request ends
        await retiring
        assert served.router._closed

    asyncio.run(scenario())


def test_stop_lets_a_replaced_index_finish_closing(mini_index: Path) -> None:
    """stop() while a replaced index is closing waits for the close to end: a cancel there would leave its
    tier 2 open for good (the Router counts itself closed from the start of its aclose). A replaced index a
    request still holds is closed by stop() too."""
    closed: list[str] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        class SlowToClose:  # tier 2 as Router.aclose sees it: its close takes until the gate opens
            async def aclose(self) -> None:
                await gate.wait()
                closed.append("tier 2")

        service = ClassifierService(Router.load(mini_index), ServeConfig(index=str(mini_index), encoder_threads=1))
        closing, held = service.serving, service._serve(Router.load(mini_index))
        closing.router.escalator = SlowToClose()  # type: ignore[assignment]
        service.serving = service._serve(Router.load(mini_index))
        held.users += 1  # a request that never ends holds this one
        service._retire(closing)
        service._retire(held)
        while not closing.router._closed:  # its retire task is inside Router.aclose, at tier 2's close
            await asyncio.sleep(0)
        stopping = asyncio.create_task(service.stop())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done() and not closed  # stop waits for the close under way
        gate.set()
        await stopping
        assert closed == ["tier 2"] and held.router._closed and not service._retired

    asyncio.run(scenario())


# Runs the app's lifespan in a process of its own: a SIGHUP (its default: terminate) arrives as the
# shutdown starts, before the old indexes are closed and the dispatcher's outbox is flushed.
_HANGUP_IN_SHUTDOWN = """
import asyncio, os, signal, sys
from router import Router
from router.service._app import create_app
from router.service._config import ServeConfig
from router.service._service import ClassifierService

service = ClassifierService(Router.load(sys.argv[1]), ServeConfig(index=sys.argv[1], encoder_threads=1))
stop = service.stop

async def hangup_then_stop():
    os.kill(os.getpid(), signal.SIGHUP)
    await stop()

service.stop = hangup_then_stop
app = create_app(service)

async def main():
    async with app.router.lifespan_context(app):
        print("serving, SIGHUP handled:", signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, flush=True)
    print("stopped, SIGHUP back to its default:", signal.getsignal(signal.SIGHUP) is signal.SIG_DFL, flush=True)

asyncio.run(main())
"""


def test_a_sighup_during_the_shutdown_is_ignored(mini_index: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _HANGUP_IN_SHUTDOWN, str(mini_index)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # not killed by the SIGHUP (-1)
    assert done.stdout.splitlines() == ["serving, SIGHUP handled: True", "stopped, SIGHUP back to its default: True"]
    assert "drained and stopped" in done.stderr


@pytest.fixture
def served(tmp_path: Path, mini_config: RouterConfig) -> Iterator[tuple[ServeProcess, Path]]:
    live = Builder(mini_config).build(tmp_path / "mini").folder
    server = ServeProcess("--index", str(live), "--encoder-threads", "1").start()
    try:
        yield server, live
    finally:
        server.stop()


def _wait_for(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sighup_reloads_the_configured_index_of_a_real_server(served: tuple[ServeProcess, Path],
                                                              mini_config: RouterConfig, tmp_path: Path) -> None:
    server, live = served
    assert server.proc is not None
    first = index_info(server.url)
    assert first["version"] == version_of(live) and classify(server.url, PIZZA)[0] != "pizza"
    # A rebuild publishes a new generation under the same name; the server reads it on SIGHUP.
    Builder(with_pizza(mini_config, tmp_path / "v2")).build(live)
    second = version_of(live)
    server.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: index_info(server.url)["version"] == second)
    assert classify(server.url, PIZZA) == ("pizza", f"mini@{second}")
    assert metrics_index(server.url) == [index_info(server.url)]
    _wait_for(lambda: f"reloaded index mini@{second} (was mini@{first['version']}" in server.output())

    # A file of the serving generation changed on disk: the next SIGHUP is refused, and logged.
    flip_a_byte(live.resolve() / "head.npz")
    server.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: "index reload refused" in server.output())
    assert f"still serving mini@{second}: " in server.output() and "head.npz does not match" in server.output()
    assert server.proc.poll() is None and classify(server.url, PIZZA) == ("pizza", f"mini@{second}")
