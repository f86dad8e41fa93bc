"""The model-routing file: shipped defaults, merging, unknown keys, references, explicit `off`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from router.dispatch import load_model_routing, model_routing_from_dict
from router.dispatch._config import STAGES
from router.errors import ConfigError


def test_shipped_file_routes_every_stage_and_prices_every_model() -> None:
    config = load_model_routing()
    assert set(config.defaults) == set(STAGES)
    assert config.prices["claude-sonnet-4-6"].input == Decimal("3.00")
    assert config.prices["gpt-5.4-nano"].cached == Decimal("0.02")
    assert config.prices["gemini-2.5-pro"].output == Decimal("10.00")
    assert config.budgets.session_tokens == 50_000
    assert (config.breaker.failures, config.breaker.window_s) == (5, 600)
    assert [r.key for r in config.chain("any", "extraction")] == [
        "openai/gpt-5.4-nano", "gemini/gemini-2.5-flash", "anthropic/claude-haiku-4-5"]


def test_moving_a_skill_to_another_provider_is_an_edit_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("overrides:\n  transfer:\n    extraction: {provider: anthropic, model: claude-sonnet-4-6}\n"
                    "prices:\n  my-model: {input: 0, output: 0}\n")
    config = load_model_routing(path)
    assert config.chain("transfer", "extraction")[0].key == "anthropic/claude-sonnet-4-6"
    assert config.chain("other", "extraction")[0].key == "openai/gpt-5.4-nano"
    assert "my-model" in config.prices and "gpt-5.5" in config.prices  # prices merge per entry


@pytest.mark.parametrize("data, message", [
    ({"budget": {}}, "unknown key 'budget'"),
    ({"retry": {"max_retries": 5}}, "retry.max_retries: Input should be less than or equal to 3 (got 5)"),
    ({"overrides": {"x": {"extraction": {"provider": "mistral", "model": "gpt-5.4"}}}},
     "overrides.x.extraction.provider: 'mistral' is not configured"),
    ({"fallbacks": {"routing": [{"provider": "openai", "model": "gpt-9"}]}},
     "fallbacks.routing[0].model: 'gpt-9' has no price"),
    ({"overrides": {"x": {"cooking": {"provider": "openai", "model": "gpt-5.4"}}}}, "overrides.x.cooking"),
    ({"budgets": {"session_tokens": None}}, "session_tokens: an empty value is not a limit"),
    ({"budgets": {"session_tokens": -1}}, "greater than or equal to 1"),
    # Stages merge over the shipped ones (test_routing_merge.py), so a stage can be left out, not emptied.
    ({"defaults": {"routing": None}}, "defaults.routing: Input should be a valid dictionary"),
    ({"defaults": {"cooking": {"provider": "openai", "model": "gpt-5.4"}}}, "defaults.cooking.[key]"),
])
def test_bad_routing_files_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_routing_from_dict(data)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [False, "off", "OFF"])
def test_a_budget_is_switched_off_only_explicitly(value: object) -> None:
    config = model_routing_from_dict({"budgets": {"session_cost_usd": value}})
    assert config.budgets.session_cost_usd is None
    assert config.budgets.switched_off() == ["session_cost_usd"]
    assert config.budgets.session_tokens == 50_000


def test_yaml_off_and_empty_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("budgets:\n  session_steps: off\n")
    assert load_model_routing(path).budgets.session_steps is None
    path.write_text("budgets:\n  session_steps:\n")
    with pytest.raises(ConfigError, match="write a number, or `off`"):
        load_model_routing(path)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model-routing file .*missing.yaml does not exist"):
        load_model_routing(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("defaults: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_model_routing(tmp_path / "bad.yaml")
