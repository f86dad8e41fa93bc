import pytest

from router import ConfigError
from router._intents import OOS
from router.datasets import load_dataset


def test_clinc150_splits() -> None:
    s = load_dataset("clinc150")
    assert len(set(s.train.labels) - {OOS}) == 150
    assert len(s.train) == 15100 and s.val is not None and len(s.val) == 3100 and len(s.test) == 5500
    assert s.test.labels.count(OOS) == 1000


def test_banking77_has_no_validation_split() -> None:
    s = load_dataset("banking77")
    assert len(set(s.train.labels)) == 77 and s.val is None and len(s.test) == 3080


def test_unknown_dataset() -> None:
    with pytest.raises(ConfigError, match=r"dataset='snips'.*banking77"):
        load_dataset("snips")
