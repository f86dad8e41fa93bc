"""`router eval-skills` and `router drill` end to end: the CLI, the shipped demo skills and golden
set, and the loopback providers behind a model-routing file that points at them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from router._cli import main
from router.dispatch._evaluate import load_golden
from router.errors import ConfigError
from tests.dispatch.conftest import Fakes, provider_section

GOLDEN = load_golden(Path(__file__).parents[2] / "router" / "dispatch" / "demo_golden.jsonl")


def _routing_file(tmp_path: Path, fakes: Fakes, **extra: Any) -> str:
    data = {"providers": provider_section(fakes), "trace": {"sink": "memory"},
            "retry": {"max_retries": 0}, **extra}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _answer_all(server: Any, model: str, wrong: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for i, case in enumerate(GOLDEN):
        params = dict(case.params)
        if i in wrong and case.skill == "transfer":
            params["amount"] = params["amount"] + 1
        server.script(case.text, json.dumps(params), model=model)


def test_eval_skills_reports_accuracy_cost_and_winner(fakes: Fakes, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _answer_all(fakes.openai, "gpt-5.4-nano", wrong={0, 1})  # cheap, wrong on 2 of 4 transfers
    _answer_all(fakes.anthropic, "claude-sonnet-4-6")  # right everywhere, dearer
    fakes.openai.fixed_usage = fakes.anthropic.fixed_usage = {"input": 1000, "output": 100}
    code = main(["eval-skills", "--model-routing", _routing_file(tmp_path, fakes), "--json",
                 "--models", "openai/gpt-5.4-nano,anthropic/claude-sonnet-4-6"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["skill"], r["model"]): r for r in report["rows"]}
    nano, sonnet = rows[("transfer", "openai/gpt-5.4-nano")], rows[("transfer", "anthropic/claude-sonnet-4-6")]
    assert (nano["cases"], nano["correct"], nano["accuracy"]) == (4, 2, 0.5)
    assert sonnet["accuracy"] == 1.0
    # 4 calls x (1000 in x $0.20 + 100 out x $1.25) / 1M; per correct: / 2
    assert nano["cost_usd"] == pytest.approx(0.0013) and nano["cost_per_correct_usd"] == pytest.approx(0.00065)
    assert sonnet["cost_usd"] == pytest.approx(4 * (1000 * 3 + 100 * 15) / 1e6)
    assert report["winners"] == {"balance": "openai/gpt-5.4-nano", "timer": "openai/gpt-5.4-nano",
                                 "transfer": "anthropic/claude-sonnet-4-6"}


def test_eval_skills_tolerance_lets_a_cheaper_model_win(fakes: Fakes, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _answer_all(fakes.openai, "gpt-5.4-nano", wrong={0})
    _answer_all(fakes.anthropic, "claude-sonnet-4-6")
    main(["eval-skills", "--model-routing", _routing_file(tmp_path, fakes), "--json", "--tolerance", "0.3",
          "--models", "openai/gpt-5.4-nano,anthropic/claude-sonnet-4-6"])
    assert json.loads(capsys.readouterr().out)["winners"]["transfer"] == "openai/gpt-5.4-nano"


def test_eval_skills_refuses_an_unpriced_model(fakes: Fakes, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'openai/gpt-9' needs a provider .* and a price"):
        from router._cli import build_parser, cmd_eval_skills

        cmd_eval_skills(build_parser().parse_args(["eval-skills", "--model-routing", _routing_file(tmp_path, fakes),
                                                   "--models", "openai/gpt-9"]))


def test_drill_reports_what_broke_on_the_secondary(fakes: Fakes, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _answer_all(fakes.openai, "gpt-5.4-nano")
    _answer_all(fakes.gemini, "gemini-2.5-flash", wrong={1})
    fakes.gemini.script("set a timer for 10 minutes", '{"minutes": "ten"}', model="gemini-2.5-flash")
    code = main(["drill", "--model-routing", _routing_file(tmp_path, fakes), "--stage", "extraction", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["verdict"] == "broken"
    assert report["primary"]["ok"] == len(GOLDEN)
    assert fakes.gemini.requests and all(r["body"] for r in fakes.gemini.requests)
    broke = {item["text"]: item for item in report["broke"]}
    assert set(broke) == {"transfer 150 euros to my landlord", "set a timer for 10 minutes"}
    assert broke["set a timer for 10 minutes"]["secondary"].startswith("InvalidParameters")
    assert broke["transfer 150 euros to my landlord"]["secondary_model"] == "gemini/gemini-2.5-flash"


def test_drill_passes_when_the_secondary_holds(fakes: Fakes, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _answer_all(fakes.openai, "gpt-5.4-nano")
    _answer_all(fakes.gemini, "gemini-2.5-flash")
    assert main(["drill", "--model-routing", _routing_file(tmp_path, fakes)]) == 0
    assert "verdict: ok" in capsys.readouterr().out


def test_drill_names_a_stage_without_a_secondary(fakes: Fakes, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    routing = _routing_file(tmp_path, fakes, fallbacks={"diagnostic": []})
    assert main(["drill", "--model-routing", routing, "--stage", "diagnostic", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["no_secondary"] == ["balance", "timer", "transfer"]
    assert report["secondary"]["ok"] == 0 and report["primary"]["ok"] == len(GOLDEN)
