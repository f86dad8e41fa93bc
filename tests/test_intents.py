from pathlib import Path

import pytest

from router import ConfigError, intent_set_from_yaml, load_intent_source
from router._intents import OOS, read_labelled


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_intent_set_loads_every_field(mini_intents: Path) -> None:
    intents = intent_set_from_yaml(mini_intents)
    transfer = intents.get("transfer")
    assert "writes" not in type(transfer).model_fields  # a skill writes (Skill.writes), not an intent
    assert transfer.skill == "payments.transfer"
    assert transfer.patterns and len(transfer.examples) == 20
    assert len(intents.names) == 8


def test_unknown_key_names_file_intent_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents:\n- name: greet\n  examples: [hi]\n  exampels: [hello]\n")
    with pytest.raises(ConfigError) as err:
        intent_set_from_yaml(path)
    assert str(path) in str(err.value)
    assert "intent 'greet'" in str(err.value)
    assert "unknown key 'exampels'" in str(err.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents:\n- name: greet\n  examples: [hi]\nintnets: []\n")
    with pytest.raises(ConfigError, match="unknown key 'intnets'"):
        intent_set_from_yaml(path)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents: [name: : :\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        intent_set_from_yaml(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        intent_set_from_yaml(tmp_path / "nope.yaml")


def test_duplicate_intent_names(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents:\n- name: a\n  examples: [x]\n- name: a\n  examples: [y]\n")
    with pytest.raises(ConfigError, match="'a' is declared twice"):
        intent_set_from_yaml(path)


def test_bad_regex_names_the_pattern(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents:\n- name: a\n  patterns: ['(unclosed']\n")
    with pytest.raises(ConfigError, match=r"intent 'a'.*\(unclosed"):
        intent_set_from_yaml(path)


def test_intent_without_evidence_and_reserved_name(tmp_path: Path) -> None:
    path = write(tmp_path, "i.yaml", "intents:\n- name: a\n  description: nothing else\n")
    with pytest.raises(ConfigError, match="at least one of examples, patterns or keywords"):
        intent_set_from_yaml(path)
    path = write(tmp_path, "j.yaml", "intents:\n- name: oos\n  examples: [x]\n")
    with pytest.raises(ConfigError, match="reserved"):
        intent_set_from_yaml(path)


def test_labelled_jsonl_and_csv(tmp_path: Path) -> None:
    jl = write(tmp_path, "d.jsonl", '{"text": "hi", "intent": "greet"}\n\n{"text": "zzz", "intent": "oos"}\n')
    data = read_labelled(jl)
    assert data.texts == ["hi", "zzz"] and data.labels == ["greet", OOS]
    intents = load_intent_source(jl)
    assert intents.names == ["greet"] and intents.oos_examples == ("zzz",)
    csv = write(tmp_path, "d.csv", "text,category\nhello there,greet\n")
    assert read_labelled(csv).labels == ["greet"]


def test_labelled_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "d.jsonl", '{"text": "hi", "intent": "greet"}\n{"txt": "x"}\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:2"):
        read_labelled(bad)
    csv = write(tmp_path, "d.csv", "sentence,label\nhi,greet\n")
    with pytest.raises(ConfigError, match="'text' and 'category'"):
        read_labelled(csv)
    with pytest.raises(ConfigError, match="unknown labelled format"):
        read_labelled(write(tmp_path, "d.txt", "hi"))


def test_content_hash_changes_with_any_edit(tmp_path: Path) -> None:
    a = intent_set_from_yaml(write(tmp_path, "a.yaml", "intents:\n- name: a\n  examples: [x]\n"))
    b = intent_set_from_yaml(write(tmp_path, "b.yaml", "intents:\n- name: a\n  examples: [x, y]\n"))
    assert a.content_hash() != b.content_hash()
    assert a.content_hash() == intent_set_from_yaml(tmp_path / "a.yaml").content_hash()
