import json
from pathlib import Path

import pytest

from router.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_build_classify_and_eval_on_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    code = main(["build", "--intents", str(FIXTURES / "mini_train.csv"), "--validation",
                 str(FIXTURES / "mini_val.jsonl"), "--name", "clitest", "--model", "minilm-l6-int8",
                 "--mine-rules"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["n_intents"] == 8 and summary["calibration"]["fitted"]

    assert main(["classify", "--index", "clitest", "will it snow tomorrow", "hi"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["candidates"][0]["intent"] == "weather"

    code = main(["eval", "--train", str(FIXTURES / "mini_train.csv"), "--val", str(FIXTURES / "mini_val.jsonl"),
                 "--test", str(FIXTURES / "mini_test.jsonl"), "--model", "minilm-l6-int8", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in ("accuracy_full", "coverage_in_scope", "accepted_precision", "oos_recall", "tier_share",
                "latency_p50_us", "latency_p99_us", "n_test"):
        assert key in result
    assert result["n_test"] == 280 and result["accuracy_full"] > 0.9
    assert set(result["tier_share"]) == {"rules", "static", "embedding", "escalated", "out_of_scope"}
    assert not list(tmp_path.glob(".eval-*"))  # the scratch index is removed


def test_errors_exit_2_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_INDEX_DIR", str(tmp_path))
    assert main(["classify", "--index", "nothing", "hello"]) == 2
    assert "no index at" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: clinc150\nbogus: 1\n")
    assert main(["build", "--config", str(bad)]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
    assert main(["eval", "--train", str(FIXTURES / "mini_train.csv")]) == 2
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


def test_bad_llm_options_exit_2(mini_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--index", str(mini_index), "clock", "--llm", "vllm"]) == 2
    assert "backend 'vllm' needs url, model" in capsys.readouterr().err
