"""A user's model-routing file names only what it changes: `defaults` and `fallbacks` merge per stage, as
`providers` and `prices` merge per entry, over the shipped file."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.dispatch import load_model_routing, model_routing_from_dict
from router.dispatch._config import STAGES
from router.errors import ConfigError


def test_a_file_that_sets_only_defaults_extraction_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("defaults:\n  extraction: {provider: anthropic, model: claude-sonnet-4-6, timeout_s: 15}\n")
    config = load_model_routing(path)
    shipped = load_model_routing()
    assert config.defaults["extraction"].key == "anthropic/claude-sonnet-4-6"
    assert config.defaults["extraction"].timeout_s == 15
    for stage in ("routing", "formatting", "diagnostic"):  # the stages left out keep the shipped model
        assert config.defaults[stage] == shipped.defaults[stage]
    assert config.fallbacks == shipped.fallbacks  # fallbacks untouched
    assert [r.key for r in config.chain("any", "extraction")] == [
        "anthropic/claude-sonnet-4-6", "gemini/gemini-2.5-flash", "anthropic/claude-haiku-4-5"]


def test_fallbacks_merge_per_stage() -> None:
    shipped = load_model_routing()
    config = model_routing_from_dict({"fallbacks": {"routing": [], "extraction": [{"provider": "openai",
                                                                            "model": "gpt-5.4"}]}})
    assert config.fallbacks["routing"] == []  # emptied by name
    assert [r.key for r in config.fallbacks["extraction"]] == ["openai/gpt-5.4"]  # replaced whole
    assert config.fallbacks["formatting"] == shipped.fallbacks["formatting"]  # left out: kept
    assert config.fallbacks["diagnostic"] == shipped.fallbacks["diagnostic"]
    assert config.chain("s", "routing") == [shipped.defaults["routing"]]


def test_a_stage_given_replaces_the_shipped_reference_whole() -> None:
    # Not field by field: a reference without timeout_s takes the model's default, not the shipped stage's 20 s.
    config = model_routing_from_dict({"defaults": {"extraction": {"provider": "openai", "model": "gpt-5.4"}}})
    assert config.defaults["extraction"].timeout_s == 30.0 and config.defaults["extraction"].max_tokens == 1024
    assert set(config.defaults) == set(STAGES)


@pytest.mark.parametrize("data, message", [
    ({"defaults": {"extraction": {"provider": "mistral", "model": "gpt-5.4"}}},
     "defaults.extraction.provider: 'mistral' is not configured"),
    ({"defaults": {"extraction": {"provider": "openai", "model": "gpt-9"}}}, "defaults.extraction.model: 'gpt-9'"),
    ({"defaults": {"extraction": None}}, "defaults.extraction: Input should be a valid dictionary"),
    ({"fallbacks": {"diagnostic": [{"provider": "openai"}]}}, "fallbacks.diagnostic.0.model: Field required"),
    ({"defaults": ["routing"]}, "defaults: Input should be a valid dictionary"),
])
def test_a_merged_stage_is_still_checked(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_routing_from_dict(data)
    assert message in str(info.value)
