"""Real uvicorn servers on free ports over the mini index, driven by a real httpx client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router import Builder, Router, RouterConfig
from router._router import built_config
from router.llm import LLMConfig
from router.service import ServeConfig, build_server
from router.service._server import DrainingServer
from router.service._service import serving_learning
from router.testing import free_port


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
