"""`router serve --workers N`: real worker processes on one port under the supervisor (service/_workers.py).

No Redis here: the classify path, the refusal of the memory state with dispatch on, signals, restarts.
The cross-process dispatch claims (shared budgets, approvals, breakers) are tests/state/test_replicas.py.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import pytest

from router._cli import main
from router.errors import ConfigError
from router.service._config import ServeConfig, load_serve_config
from router.service._workers import (
    METRICS_DIR,
    Supervisor,
    check_shared_state,
    own_process_group,
    terminal_signals_held,
)
from router.testing import ServeProcess, free_port

SKILLS = "router.dispatch.demo:registry"
CLIENTS = 8


def _one_connection(url: str) -> tuple[int, int]:
    """(the pid of the worker holding a fresh connection, the status of a classify on that connection)."""
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
        pid = client.get("/readyz").json()["pid"]
        status = client.post("/v1/classify", json={"text": "what is my checking balance"}).status_code
        return pid, status


def _workers_answering(url: str, want: int, timeout_s: float = 90.0) -> tuple[set[int], int]:
    """Concurrent fresh connections until ``want`` distinct worker pids have answered; (the pids, the
    classify requests sent). Each classify must be answered 200."""
    pids: set[int] = set()
    sent = 0
    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(CLIENTS) as pool:
        while len(pids) < want:
            assert time.monotonic() < deadline, f"only workers {pids} answered"
            for pid, status in pool.map(lambda _: _one_connection(url), range(CLIENTS)):
                assert status == 200
                pids.add(pid)
                sent += 1
    return pids, sent


def _parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_for(check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# -- the refusal ------------------------------------------------------------------------------------------
def test_workers_with_the_memory_state_and_dispatch_on_are_refused_saying_why_and_how(
        capsys: pytest.CaptureFixture[str], mini_index: Path) -> None:
    code = main(["serve", "--workers", "2", "--skills", SKILLS, "--index", str(mini_index),
                 "--port", str(free_port())])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "--workers 2 is refused with the memory state" in err
    assert "2x the cap" in err and "approval id" in err and "breakers" in err  # why
    assert "--state redis://" in err  # how
    with pytest.raises(ConfigError, match=r"memory state \(--state\)"):
        check_shared_state(ServeConfig(workers=3, skills=SKILLS, state="memory"))
    with pytest.raises(ConfigError, match=r"while the proxy is on \(--proxy\)"):  # its budgets are the dispatcher's
        check_shared_state(ServeConfig(workers=2, proxy=True))


def test_workers_are_allowed_with_a_shared_state_or_without_dispatch() -> None:
    check_shared_state(ServeConfig(workers=2, skills=SKILLS, state="redis://127.0.0.1:6379/0"))  # not connected
    check_shared_state(ServeConfig(workers=2))  # classify only: nothing is shared
    check_shared_state(ServeConfig(workers=1, skills=SKILLS))  # one process: today's path


def test_workers_and_state_limits_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeConfig().workers == 1 and ServeConfig().state is None
    for bad in (0, 65):
        with pytest.raises(ConfigError, match=rf"workers.*{bad}"):
            load_serve_config({"workers": bad})
    monkeypatch.setenv("ROUTER_SERVE_WORKERS", "4")
    monkeypatch.setenv("ROUTER_SERVE_STATE", "redis://10.0.0.1:6379/2")
    config = load_serve_config({})
    assert config.workers == 4 and config.state == "redis://10.0.0.1:6379/2"
    assert load_serve_config({"workers": 2}).workers == 2  # a flag wins over the variable


def test_state_flag_overrides_the_model_routing_file_and_is_validated(tmp_path: Path) -> None:
    from router.service._server import model_routing

    path = tmp_path / "routing.yaml"
    path.write_text("state: {url: memory, prefix: 'app1:'}\n")
    routing = model_routing(ServeConfig(model_routing=str(path), state="redis://127.0.0.1:6379/3"))
    assert routing.state.url == "redis://127.0.0.1:6379/3" and routing.state.prefix == "app1:"  # only the url
    assert model_routing(ServeConfig(model_routing=str(path))).state.url == "memory"
    with pytest.raises(ConfigError, match=r"--state 'mongodb://x'.*unknown state backend"):
        model_routing(ServeConfig(state="mongodb://x"))


def test_the_encoder_threads_default_is_each_workers_share_of_the_cores(mini_index: Path) -> None:
    from router._router import built_config
    from router.service._service import serving_encoder

    built = built_config(mini_index).encoder
    cores = os.cpu_count() or 1
    for workers in (1, 2, 64):
        threads = serving_encoder(ServeConfig(workers=workers), built).threads
        assert threads == max(1, min(cores // workers, 4))
    assert serving_encoder(ServeConfig(workers=64, encoder_threads=3), built).threads == 3  # given: kept


# -- real processes ---------------------------------------------------------------------------------------
def test_two_workers_share_one_port_reload_on_sighup_and_drain_on_sigterm(
        mini_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(METRICS_DIR, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the supervisor makes its metrics folder
    server = ServeProcess("--index", str(mini_index), "--workers", "2", "--encoder-threads", "1",
                          "--drain-delay-s", "600").start()
    proc = server.proc
    assert proc is not None
    try:
        pids, sent = _workers_answering(server.url, want=2)
        [folder] = tmp_path.glob("router-metrics-*")  # made by the supervisor: the workers write their samples there
        assert {f"gauge_all_{pid}.db" for pid in pids} <= {path.name for path in folder.iterdir()}
        assert len(pids) == 2 and all(_parent_of(pid) == proc.pid for pid in pids)  # the supervisor's workers
        # Metrics: any worker answers every worker's counts (prometheus_client's multiprocess mode).
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert f'router_requests_total{{endpoint="/v1/classify",status="200"}} {float(sent)}' in metrics
        assert {int(p) for p in re.findall(r'router_in_flight_requests\{pid="(\d+)"\}', metrics)} == pids

        proc.send_signal(signal.SIGHUP)  # forwarded: each worker reloads its own index
        _wait_for(lambda: server.output().count("reloaded index") == 2)

        proc.send_signal(signal.SIGTERM)  # forwarded: both workers drain, still answering but not ready
        draining: set[int] = set()

        def both_draining() -> bool:
            ready = httpx.get(f"{server.url}/readyz", timeout=5, headers={"Connection": "close"})
            if ready.status_code == 503 and ready.json()["draining"]:
                draining.add(ready.json()["pid"])
            return draining == pids

        _wait_for(both_draining)
        proc.send_signal(signal.SIGTERM)  # a second signal is forwarded again: the 600 s drain delay is skipped
        assert proc.wait(60) == 0
        assert all(_gone(pid) for pid in pids)
        out = server.output()
        assert out.count("drained and stopped") == 2 and "Traceback" not in out
        assert not folder.exists()  # and removed at its exit
    finally:
        server.stop()


def _in_flight_pids(url: str) -> set[int]:
    """The pids of the router_in_flight_requests series in /metrics (one per worker: a gauge)."""
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    return {int(pid) for pid in re.findall(r'^router_in_flight_requests\{pid="(\d+)"\}', metrics, re.MULTILINE)}


def test_a_killed_worker_is_restarted_and_the_others_keep_serving(
        mini_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "metrics"  # PROMETHEUS_MULTIPROC_DIR set: the supervisor uses it, its old samples removed
    given.mkdir()
    (given / "counter_4242.db").write_bytes(b"a previous run's counts")
    (given / "notes.txt").write_text("not a samples file: kept")
    monkeypatch.setenv(METRICS_DIR, str(given))
    server = ServeProcess("--index", str(mini_index), "--workers", "2", "--encoder-threads", "1").start()
    proc = server.proc
    assert proc is not None
    try:
        first, _ = _workers_answering(server.url, want=2)
        assert not (given / "counter_4242.db").exists() and (given / "notes.txt").exists()
        assert _in_flight_pids(server.url) == first
        killed, kept = sorted(first)
        os.kill(killed, signal.SIGKILL)
        _wait_for(lambda: "is serving again" in server.output(), timeout_s=120)
        now, _ = _workers_answering(server.url, want=2)
        assert killed not in now and kept in now and len(now) == 2
        assert f"(pid {killed}) was killed by SIGKILL; starting a new one in 0.5s" in server.output()
        # The dead worker's gauges are gone (its counters stay in the sums): one series per live worker.
        assert _in_flight_pids(server.url) == now and not (given / f"gauge_all_{killed}.db").exists()
        assert server.stop() == 0
        assert given.is_dir()  # given, so kept
    finally:
        server.stop()


def test_a_worker_that_cannot_start_stops_the_server_with_its_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "router._cli", "serve", "--workers", "2", "--port",
                           str(free_port()), "--index", str(tmp_path / "no-such-index")],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1
    assert "router: error: worker" in done.stderr and "no-such-index" in done.stderr  # the worker's own error
    assert "before it was serving; the other workers were stopped" in done.stderr
    assert "starting a new one" not in done.stderr  # a bad start is not retried in a loop


def test_a_port_in_use_is_refused_before_any_worker_starts(mini_index: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "router._cli", "serve", "--workers", "2", "--port", str(port),
                               "--index", str(mini_index)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"--port {port}: cannot listen there" in done.stderr
    assert "worker" not in done.stderr.split("cannot listen there")[1]


# -- signals and the metrics folder, in the supervisor ----------------------------------------------------
def _interrupted_before_its_own_group(report: Connection) -> None:
    """A worker's start, in a spawned process: a Ctrl-C on the terminal arrives before its setpgid."""
    os.kill(os.getpid(), signal.SIGINT)
    own_process_group()
    report.send(os.getpgid(0) == os.getpid())  # it got through, in a group of its own
    try:
        os.kill(os.getpid(), signal.SIGINT)  # from now on a SIGINT interrupts it as usual
        time.sleep(60)
    except KeyboardInterrupt:
        report.send("interrupted")


def test_a_ctrl_c_before_a_worker_has_its_own_process_group_is_dropped() -> None:
    context = multiprocessing.get_context("spawn")  # as the supervisor starts its workers
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_interrupted_before_its_own_group, args=(writer,))
    with terminal_signals_held():
        process.start()
    writer.close()
    try:
        assert reader.poll(60) and reader.recv() is True  # no KeyboardInterrupt in its start
        assert reader.poll(60) and reader.recv() == "interrupted"
        process.join(30)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def _sleep_until_a_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # terminate, even under a runner that ignores it (nohup)
    time.sleep(60)


def test_sighup_is_not_forwarded_to_workers_that_stop() -> None:
    """A reload has nothing to do in a worker that drains; forwarded, it would only be refused there."""
    supervisor = Supervisor(ServeConfig(workers=1), socket.socket())
    supervisor.sock.close()
    worker = supervisor.workers[0]
    process = multiprocessing.get_context("spawn").Process(target=_sleep_until_a_sighup)
    process.start()
    worker.process, worker.pid, worker.ready = process, process.pid or 0, True
    try:
        supervisor.stopping = True
        supervisor._forward(signal.SIGHUP)
        process.join(0.5)
        assert process.is_alive()
        supervisor.stopping = False
        supervisor._forward(signal.SIGHUP)  # serving: forwarded
        process.join(30)
        assert process.exitcode == -signal.SIGHUP
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def test_a_metrics_folder_that_cannot_be_used_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "metrics"
    monkeypatch.setenv(METRICS_DIR, str(bad))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    with socket.socket() as sock:
        supervisor = Supervisor(ServeConfig(workers=2), sock)
        with pytest.raises(ConfigError, match=rf"{METRICS_DIR}='{bad}': cannot hold the workers' metrics files"):
            supervisor.run()
    assert all(worker.process is None for worker in supervisor.workers)  # refused before any worker started
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the supervisor's handlers are undone
