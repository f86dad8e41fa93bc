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
