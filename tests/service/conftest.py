"""Real uvicorn servers on free ports over the mini index, driven by a real httpx client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import router as router_package
from router import Builder, Router, RouterConfig
from router._router import built_config
from router.dispatch import Dispatcher, SkillRegistry, model_routing_from_dict
from router.llm import LLMConfig
from router.service import ServeConfig, build_server
from router.service._server import DrainingServer
from router.service._service import serving_learning
from router.service.dispatch._observe import ObservedSink
from router.testing import FakeAnthropic, FakeGemini, FakeOpenAI, free_port


class Running:
    def __init__(self, server: DrainingServer, port: int) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    @property
    def service(self) -> Any:
        return self.server.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def skills_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    """The mini index with the demo registry's skill names in its intents (``transfer``, ``balance``):
    a Decision's ``skill`` is what ``/v1/dispatch`` runs, so the intents file says which skill."""
    folder = tmp_path_factory.mktemp("skills")
    data = yaml.safe_load(Path(mini_config.intents).read_text())  # type: ignore[arg-type]
    for intent in data["intents"]:
        if intent["name"] in ("transfer", "balance"):
            intent["skill"] = intent["name"]
    (folder / "intents.yaml").write_text(yaml.safe_dump(data))
    config = mini_config.model_copy(update={"name": "skills", "intents": str(folder / "intents.yaml")})
    Builder(config).build(folder / "skills")
    return folder / "skills"


@pytest.fixture
def start_server(mini_index: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(llm: dict[str, Any] | None = None, index: Path = mini_index, **options: Any) -> Running:
        port = free_port()
        # Each server learns into its own log: feedback sent to one (the schema fuzzer's included) must never
        # reach the session's shared index, whose default log sits beside it.
        options.setdefault("learn_log", str(tmp_path / f"learned-{port}.jsonl"))
        if not options.get("api_key_env"):
            # Without an API key the learning routes are off unless --feedback on: on here, so that the schema
            # fuzzer still reaches them (tests/service/test_learn_http.py tests the default).
            options.setdefault("feedback", True)
        if options.get("skills") and not options.get("approver_key_env"):
            # The dispatch tests approve with the service key (or none): a writes skill then needs the explicit
            # switch. tests/service/test_approver.py tests the approver key and the refusal without it.
            options.setdefault("allow_self_approval", True)
        config = ServeConfig(port=port, index=str(index), encoder_threads=1, **options)
        llm_config = LLMConfig.model_validate({"gate": "on", **llm}) if llm else "off"
        learning = serving_learning(config, built_config(Path(index).resolve()).learning)
        router = Router.load(index, llm=llm_config, learning=learning)
        r = Running(build_server(config, router), port)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server()


@pytest.fixture
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# -- the proxy (router serve --proxy): module-scoped servers over the loopback providers -------------------
PROXY_KEYS = {"OPENAI_API_KEY": "sk-test-OPENAI-secret", "ANTHROPIC_API_KEY": "sk-ant-test-secret",
              "GEMINI_API_KEY": "AIza-test-secret"}
# The proxy index: the mini intents and three money intents of CLINC150 (CC BY 3.0), so that a follow-up such
# as "and in euros?" is unsure (escalated) between them while "what is the exchange rate between dollars and
# pesos" is a confident exchange_rate.
PROXY_EXTRA_INTENTS = ("exchange_rate", "international_fees", "interest_rate")


def chat_ref(provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "timeout_s": 5, "max_tokens": 256, **extra}


def proxy_routing(fakes: ProxyFakes, **overrides: Any) -> dict[str, Any]:
    """The chat stage: OpenAI by default, the weather skill on Anthropic, the balance skill on Gemini,
    exchange_rate on Anthropic; no fallback and no retry unless a test adds them."""
    data: dict[str, Any] = {
        "providers": {
            "openai": {"kind": "openai", "base_url": fakes.openai.url, "api_key_env": "OPENAI_API_KEY"},
            "anthropic": {"kind": "anthropic", "base_url": fakes.anthropic.url, "api_key_env": "ANTHROPIC_API_KEY"},
            "gemini": {"kind": "gemini", "base_url": fakes.gemini.url, "api_key_env": "GEMINI_API_KEY"},
        },
        "trace": {"sink": "memory"},
        "retry": {"max_retries": 0, "initial_backoff_s": 0.01, "max_backoff_s": 0.05},
        "defaults": {"chat": chat_ref("openai", "gpt-5.4-nano")},
        "fallbacks": {"chat": []},
        # Every test of a module shares its server's default session: room for all of them.
        "budgets": {"session_steps": 10_000, "session_tokens": 10_000_000, "session_cost_usd": 100},
        "overrides": {"info.weather": {"chat": chat_ref("anthropic", "claude-haiku-4-5")},
                      "banking.balance": {"chat": chat_ref("gemini", "gemini-2.5-flash")},
                      "exchange_rate": {"chat": chat_ref("anthropic", "claude-haiku-4-5")}},
    }
    data.update(overrides)
    return data


@dataclass
class ProxyFakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def all(self) -> list[Any]:
        return [self.openai, self.anthropic, self.gemini]

    def clear(self) -> None:
        """Forget what each received, its faults and its stream counters (a test of its own)."""
        for fake in self.all():
            fake.requests.clear()
            fake.always(None)
            fake.stream_chunk_delay_s = 0.0
            fake.streams_done = fake.streams_cut = 0


@dataclass
class ProxyServer:
    running: Running
    fakes: ProxyFakes

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def dispatcher(self) -> Dispatcher:
        return self.running.dispatcher  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="session")
def proxy_index(tmp_path_factory: pytest.TempPathFactory, mini_config: RouterConfig) -> Path:
    clinc = json.loads((Path(router_package.__file__).parent / "datasets/clinc150/data_full.json").read_text())
    folder = tmp_path_factory.mktemp("proxy")
    data = yaml.safe_load(Path(mini_config.intents).read_text())  # type: ignore[arg-type]
    rows = Path(mini_config.validation).read_text().splitlines()  # type: ignore[arg-type]
    for name in PROXY_EXTRA_INTENTS:
        data["intents"].append({"name": name, "description": name.replace("_", " "),
                                "examples": [t for t, i in clinc["train"] if i == name][:20]})
        rows += [json.dumps({"text": t, "intent": name}) for t, i in clinc["val"] if i == name][:10]
    (folder / "intents.yaml").write_text(yaml.safe_dump(data))
    (folder / "val.jsonl").write_text("\n".join(rows) + "\n")
    config = mini_config.model_copy(update={"name": "proxy", "intents": str(folder / "intents.yaml"),
                                            "validation": str(folder / "val.jsonl")})
    Builder(config).build(folder / "proxy")
    return folder / "proxy"


@pytest.fixture(scope="module")
def proxy_fakes() -> Iterator[ProxyFakes]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in PROXY_KEYS.items():
            env.setenv(name, value)
        fakes = ProxyFakes(FakeOpenAI(api_key=PROXY_KEYS["OPENAI_API_KEY"]),
                           FakeAnthropic(api_key=PROXY_KEYS["ANTHROPIC_API_KEY"]),
                           FakeGemini(api_key=PROXY_KEYS["GEMINI_API_KEY"]))
        for fake in fakes.all():
            fake.start()
        yield fakes
        for fake in fakes.all():
            fake.stop()


@pytest.fixture(scope="module")
def start_proxy(proxy_index: Path, proxy_fakes: ProxyFakes,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ProxyServer]]:
    """``start_proxy(routing=None, **serve_options)``: `router serve --proxy` over the proxy index, its
    dispatcher's model-routing file ``routing`` (default ``proxy_routing(fakes)``), with no skills."""
    running: list[Running] = []
    logs = tmp_path_factory.mktemp("proxy-logs")

    def start(routing: dict[str, Any] | None = None, **options: Any) -> ProxyServer:
        port = free_port()
        options.setdefault("learn_log", str(logs / f"learned-{port}.jsonl"))
        config = ServeConfig(port=port, index=str(proxy_index), encoder_threads=1, proxy=True, **options)
        model_routing = model_routing_from_dict(routing if routing is not None else proxy_routing(proxy_fakes))
        dispatcher = Dispatcher(model_routing, SkillRegistry(), sink=ObservedSink.for_routing(model_routing))
        r = Running(build_server(config, Router.load(proxy_index, llm="off"), dispatcher), port)
        r.dispatcher = dispatcher  # type: ignore[attr-defined]
        running.append(r)
        return ProxyServer(r, proxy_fakes)

    yield start
    for r in running:
        r.stop()
