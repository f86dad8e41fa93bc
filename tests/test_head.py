from pathlib import Path

import numpy as np

from router._head import LinearHead, train_head


def blobs(n_per: int = 40, classes: int = 4, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(42).normal(size=(classes, dim)) * 3  # same classes for every seed
    rng = np.random.default_rng(seed)
    x = np.vstack([centres[c] + rng.normal(size=(n_per, dim)) for c in range(classes)]).astype(np.float32)
    return x, np.repeat(np.arange(classes), n_per)


def test_learns_separable_classes() -> None:
    x, y = blobs()
    head = train_head(x, y, 4, epochs=200)
    xt, yt = blobs(seed=1)
    assert (head.probabilities(xt).argmax(axis=1) == yt).mean() > 0.95


def test_probabilities_are_a_distribution() -> None:
    x, y = blobs()
    probs = train_head(x, y, 4, epochs=20).probabilities(x[:5])
    assert probs.shape == (5, 4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, y = blobs()
    head = train_head(x, y, 4, epochs=20)
    head.save(tmp_path / "h.npz")
    loaded = LinearHead.load(tmp_path / "h.npz")
    assert np.array_equal(loaded.probabilities(x), head.probabilities(x))


# -- warm starts and weights (learning from feedback refits from the serving head) -------------------
def test_init_with_no_epochs_is_the_given_head() -> None:
    x, y = blobs()
    head = train_head(x, y, 4, epochs=50)
    head.reject = True
    kept = head.weights.copy()
    again = train_head(x, y, 4, epochs=0, init=head)
    assert np.array_equal(again.weights, head.weights) and np.array_equal(again.bias, head.bias)
    assert again.reject and again.weights is not head.weights
    train_head(x, y, 4, epochs=5, init=head)
    assert np.array_equal(head.weights, kept)  # the head it starts from is not trained in place


def test_init_with_one_epoch_stays_close_and_keeps_its_answers() -> None:
    x, y = blobs()
    head = train_head(x, y, 4, epochs=200)
    lr = 0.01
    warm = train_head(x, y, 4, epochs=1, learning_rate=lr, init=head)
    cold = train_head(x, y, 4, epochs=1, learning_rate=lr)
    assert np.abs(warm.weights - head.weights).max() <= lr * 1.01  # one Adam step: at most lr per weight
    assert np.array_equal(warm.probabilities(x).argmax(axis=1), head.probabilities(x).argmax(axis=1))
    assert np.abs(warm.weights - head.weights).max() < np.abs(cold.weights - head.weights).max()
    xt, yt = blobs(seed=1)
    assert (warm.probabilities(xt).argmax(axis=1) == yt).mean() > 0.95


def test_sample_weight_shifts_the_fit_toward_heavy_rows() -> None:
    x, y = blobs(n_per=20, classes=2)
    halfway = (x[:20].mean(axis=0) + x[20:].mean(axis=0)) / 2  # between the two classes
    contested = np.repeat(halfway[None, :], 10, axis=0)
    xs = np.vstack([x, contested, contested]).astype(np.float32)
    ys = np.concatenate([y, np.zeros(10, dtype=np.int64), np.ones(10, dtype=np.int64)])
    heavy_one = np.concatenate([np.ones(len(x)), np.ones(10), np.full(10, 5.0)])
    heavy_zero = np.concatenate([np.ones(len(x)), np.full(10, 5.0), np.ones(10)])
    point = contested[:1]
    p_one = train_head(xs, ys, 2, epochs=200, sample_weight=heavy_one).probabilities(point)[0]
    p_zero = train_head(xs, ys, 2, epochs=200, sample_weight=heavy_zero).probabilities(point)[0]
    assert p_one[1] > p_one[0] and p_zero[0] > p_zero[1]


def test_uniform_sample_weights_are_no_weights() -> None:
    x, y = blobs()
    plain = train_head(x, y, 4, epochs=30)
    for scale in (1.0, 3.0):
        weighted = train_head(x, y, 4, epochs=30, sample_weight=np.full(len(x), scale))
        assert np.allclose(weighted.weights, plain.weights, atol=1e-5)
        assert np.allclose(weighted.bias, plain.bias, atol=1e-5)
