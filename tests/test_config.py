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
