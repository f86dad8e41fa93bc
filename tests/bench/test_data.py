from __future__ import annotations

from collections import Counter

from router._intents import OOS, Labelled
from router.bench._data import holdout, load_bench_data


def test_a_slice_keeps_the_first_intents_capped_and_the_out_of_scope_rows() -> None:
    data = load_bench_data("clinc150", max_intents=4, train_per_intent=10)
    assert len(data.intents) == 4
    counts = Counter(data.train.labels)
    assert set(counts) == {*data.intents, OOS} and max(counts.values()) == 10
    assert set(data.test.labels) <= {*data.intents, OOS} and OOS in data.test.labels
    assert data.val is not None and set(data.val.labels) <= {*data.intents, OOS}


def test_samples_are_seeded_and_nest() -> None:
    data = load_bench_data("banking77", test_limit=200)
    assert len(data.test) == 200 and data.val is None
    small, large = data.sample(20), data.sample(60)
    assert len(small) == 20 and set(small) < set(large)
    assert data.sample(None) == list(range(200))
    assert load_bench_data("banking77", test_limit=200).sample(20) == small
    assert load_bench_data("banking77", test_limit=200, seed=1).sample(20) != small


def test_holdout_is_stratified() -> None:
    data = Labelled([f"t{i}" for i in range(40)], ["a"] * 30 + ["b"] * 10)
    rest, held = holdout(data, 0.1)
    assert Counter(held.labels) == {"a": 3, "b": 1}
    assert len(rest) == 36 and not set(rest.texts) & set(held.texts)
