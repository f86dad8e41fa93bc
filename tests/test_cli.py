import argparse
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from router._cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_build_classify_and_eval_on_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path / "not-here"))  # --index-dir wins over the variable
    code = main(["build", "--intents", str(FIXTURES / "mini_train.csv"), "--validation",
                 str(FIXTURES / "mini_val.jsonl"), "--name", "clitest", "--model", "minilm-l6-int8",
                 "--mine-rules", "--index-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)  # stdout is one JSON document
    assert summary["n_intents"] == 8 and summary["calibration"]["fitted"]
    assert summary["index"] == str(tmp_path / "clitest") and not (tmp_path / "not-here").exists()

    assert main(["classify", "--index", "clitest", "--index-dir", str(tmp_path), "will it snow tomorrow", "hi"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["candidates"][0]["intent"] == "weather"

    code = main(["eval", "--train", str(FIXTURES / "mini_train.csv"), "--val", str(FIXTURES / "mini_val.jsonl"),
                 "--test", str(FIXTURES / "mini_test.jsonl"), "--model", "minilm-l6-int8", "--json",
                 "--index-dir", str(tmp_path)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in ("accuracy_full", "coverage_in_scope", "accepted_precision", "oos_recall", "tier_share",
                "latency_p50_us", "latency_p99_us", "n_test"):
        assert key in result
    assert result["n_test"] == 280 and result["accuracy_full"] > 0.9
    assert set(result["tier_share"]) == {"rules", "static", "embedding", "escalated", "out_of_scope"}
    assert not list(tmp_path.glob(".eval-*"))  # the scratch index is removed


def test_router_errors_exit_1_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    assert main(["classify", "--index", "nothing", "hello"]) == 1
    assert "no index at" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: clinc150\nbogus: 1\n")
    assert main(["build", "--config", str(bad)]) == 1
    assert "unknown key 'bogus'" in capsys.readouterr().err
    assert main(["eval", "--train", str(FIXTURES / "mini_train.csv")]) == 1
    assert "needs --test" in capsys.readouterr().err


def test_classify_and_eval_with_tier2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mini_index: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from router.testing import FakeVLLM

    assert main(["classify", "--index", str(mini_index), "clock", "--llm", "memory"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tier"] == "llm" and "tier 2: on" in captured.err

    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    server = FakeVLLM(model="qwen").start()
    try:
        code = main(["eval", "--train", str(FIXTURES / "mini_train.csv"), "--val", str(FIXTURES / "mini_val.jsonl"),
                     "--test", str(FIXTURES / "mini_test.jsonl"), "--json", "--llm", "vllm",
                     "--llm-url", server.url, "--llm-model", "qwen"])
    finally:
        server.stop()
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["llm_backend"] == ["vllm"]
    assert result["escalation_rate"] > 0 and result["llm_calls"] == result["n_escalated"]
    assert len(server.requests) == result["llm_calls"] + 1  # and one warm-up call
    for key in ("llm_slice_accuracy", "tier1_slice_accuracy", "end_to_end_accuracy", "end_to_end_accuracy_tier1",
                "llm_latency_p50_ms", "llm_latency_p90_ms", "llm_prompt_tokens_mean"):
        assert result[key] is not None


def test_bad_llm_options_exit_1(mini_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--index", str(mini_index), "clock", "--llm", "vllm"]) == 1
    assert "backend 'vllm' needs url, model" in capsys.readouterr().err


def _run_cli(*args: str, block: str = "") -> subprocess.CompletedProcess[str]:
    """``router`` in a child process; ``block`` makes those top-level modules unimportable, as if not installed."""
    code = ("import sys\n"
            f"class Block:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {block.split(',')!r}: raise ModuleNotFoundError(name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from router._cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_version_and_exit_codes() -> None:
    import router

    done = _run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"router {router.__version__} (tiered-router)"
    assert router.__version__ == importlib.metadata.version("tiered-router")
    usage = _run_cli("classify")  # missing argument: argparse's usage error
    assert usage.returncode == 2 and "usage:" in usage.stderr
    failed = _run_cli("classify", "--index", "/nonexistent/idx", "hi")  # a RouterError
    assert failed.returncode == 1 and failed.stderr.startswith("router: error: no index at /nonexistent/idx")
    assert "Traceback" not in failed.stderr


def test_library_and_serve_help_work_without_the_server_extra(mini_index: Path) -> None:
    blocked = "fastapi,starlette,uvicorn,uvloop,httptools,prometheus_client"
    code = ("import sys\n"
            "class Block:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked.split(',')!r}: raise ModuleNotFoundError(name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import router\n"
            f"print(router.Router.load({str(mini_index)!r}).classify('will it snow tomorrow').intent)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "weather"
    assert _run_cli("serve", "--help", block=blocked).returncode == 0
    serve = _run_cli("serve", "--index", str(mini_index), block=blocked)
    assert serve.returncode == 1
    assert "router serve needs the [server] extra" in serve.stderr and "tiered-router[server]" in serve.stderr


def test_help_defaults_match_the_code(capsys: pytest.CaptureFixture[str], mini_index: Path) -> None:
    import os

    from router._config import EncoderConfig
    from router._router import built_config
    from router.service._config import ServeConfig
    from router.service._service import serving_encoder

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in ("port", "batch_window_ms", "batch_max", "max_in_flight", "request_timeout_s"):
        assert f"default {ServeConfig.model_fields[field].default}" in text
    assert "ONNX Runtime threads (default: one per core, at most 4)" in text
    # what serve does without --encoder-threads
    served = serving_encoder(ServeConfig(index=str(mini_index)), built_config(mini_index).encoder)
    assert served is not None and served.threads == min(os.cpu_count() or 1, 4)
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert f"(default {EncoderConfig.model_fields['threads'].default})" in " ".join(capsys.readouterr().out.split())


def test_serve_flags_are_generated_from_the_config_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from router._cli import _serve_options, build_parser
    from router.service._config import ServeConfig, load_serve_config

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {opt for action in commands.choices["serve"]._actions for opt in action.option_strings}
    assert {"--" + name.replace("_", "-") for name in ServeConfig.model_fields} <= flags

    args = parser.parse_args(["serve", "--port", "8100", "--static", "off", "--request-timeout-s", "2.5"])
    assert _serve_options(args) == {"port": 8100, "static": False, "request_timeout_s": 2.5}  # only what was given
    monkeypatch.setenv("ROUTER_SERVE_PORT", "9000")
    monkeypatch.setenv("ROUTER_SERVE_BATCH_MAX", "7")
    config = load_serve_config(_serve_options(args))
    assert config.port == 8100 and config.batch_max == 7  # the flag beats the variable; the variable the default
    auto = parser.parse_args(["serve", "--static", "auto"])
    assert _serve_options(auto) == {"static": None}
