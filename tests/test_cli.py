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
    assert set(result["tier_share"]) == {"rules", "embedding", "escalated", "out_of_scope"}
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
