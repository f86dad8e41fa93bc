from pathlib import Path

import pytest

from router import ConfigError, RouterConfig, load_config


def test_defaults_are_on_without_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: clinc150\n")
    config = load_config(path)
    assert config.limits.max_text_chars == 2000
    assert config.limits.max_batch == 256
    assert config.calibration.target_precision == 0.97
    assert config.encoder.model == "minilm-l6-int8"


def test_unknown_nested_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: clinc150\nencoder:\n  thread: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'encoder.thread'"):
        load_config(path)


def test_out_of_range_value_names_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dataset: clinc150\ncalibration:\n  target_precision: 1.5\n")
    with pytest.raises(ConfigError, match=r"calibration.target_precision.*1.5"):
        load_config(path)


def test_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of 'intents'"):
        RouterConfig()
    with pytest.raises(ValueError, match="exactly one of 'intents'"):
        RouterConfig(dataset="clinc150", intents="x.yaml")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("intents: intents.yaml\nvalidation: val.jsonl\n")
    config = load_config(path)
    assert config.intents == str((tmp_path / "sub" / "intents.yaml").resolve())


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


# -- the one strict base and the one ValidationError formatter -------------------------------------------------

def test_the_formatter_names_the_path_the_value_and_unknown_keys() -> None:
    from pydantic import ValidationError

    from router._strict import Strict, format_validation_error

    class Inner(Strict):
        size: int = 1

    class Outer(Strict):
        inner: Inner = Inner()
        name: str
        items: list[Inner] = []

    data = {"inner": {"size": "big", "colour": 1}, "items": [{"name": "x"}]}
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    message = format_validation_error(caught.value, "o.yaml")
    assert "o.yaml: inner.size: Input should be a valid integer" in message and "(got 'big')" in message
    assert "o.yaml: unknown key 'inner.colour'" in message
    assert "o.yaml: name: Field required" in message and "Field required (got" not in message  # nothing was given
    assert "o.yaml: unknown key 'items.0.name'" in message  # without data, the index

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"name": "n", "items": [{"name": "first", "size": "x" * 500}]})
    named = format_validation_error(caught.value, "o.yaml", {"items": [{"name": "first"}]})
    assert "o.yaml: item 'first': unknown key 'name'" in named  # with data, the item's name
    assert "..." in named and len(named) < 500  # a long value is cut


# -- ServeConfig: flags over the environment over the defaults -------------------------------------------------

def test_serve_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.service._config import ServeConfig, load_serve_config

    monkeypatch.setenv("ROUTER_SERVE_PORT", "9123")
    monkeypatch.setenv("ROUTER_SERVE_STATIC", "false")
    monkeypatch.setenv("ROUTER_SERVE_BATCH_MAX", "")  # empty counts as unset
    config = load_serve_config({})
    assert config.port == 9123 and config.static is False
    assert config.batch_max == ServeConfig.model_fields["batch_max"].default
    given = load_serve_config({"port": 8001, "static": None})  # a flag wins, even one that says "auto"
    assert given.port == 8001 and given.static is None


def test_a_bad_environment_value_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.service._config import load_serve_config

    monkeypatch.setenv("ROUTER_SERVE_MAX_IN_FLIGHT", "0")
    with pytest.raises(ConfigError, match=r"max_in_flight: .*\(got '0'\).*ROUTER_SERVE_MAX_IN_FLIGHT='0'"):
        load_serve_config({})
    assert load_serve_config({"max_in_flight": 5}).max_in_flight == 5  # the flag replaces the bad variable

    monkeypatch.setenv("ROUTER_SERVE_MAX_IN_FLIGHTS", "5")
    with pytest.raises(ConfigError, match="unknown environment variable.*ROUTER_SERVE_MAX_IN_FLIGHTS"):
        load_serve_config({"max_in_flight": 5})


def test_every_serve_setting_is_described() -> None:
    from router.service._config import ServeConfig

    assert all(field.description for field in ServeConfig.model_fields.values())
