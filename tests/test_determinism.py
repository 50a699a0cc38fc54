"""Seeded training is repeatable: the same run twice gives the same numbers."""

import numpy as np
import pytest

from utils import course


def _train_once(seed: int) -> tuple[list[float], np.ndarray]:
    import keras

    course.setup("fast", seed, fast={}, full={})
    rng = np.random.default_rng(123)  # the data is fixed; only the model's randomness is seeded
    x = rng.normal(size=(256, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    hist = model.fit(x, y, batch_size=32, epochs=3, shuffle=True, verbose=0)
    return hist.history["loss"], model.predict(x[:16], verbose=0)


def test_same_seed_same_losses_and_predictions():
    loss_a, pred_a = _train_once(7)
    loss_b, pred_b = _train_once(7)
    assert loss_a == loss_b
    np.testing.assert_array_equal(pred_a, pred_b)


def test_different_seed_changes_the_run():
    loss_a, _ = _train_once(7)
    loss_c, _ = _train_once(8)
    assert loss_a != loss_c


def test_learning_happened():
    loss, _ = _train_once(7)
    assert loss[-1] < loss[0]


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed_is_rejected_with_the_parameter_name(bad):
    with pytest.raises(ValueError, match="SEED"):
        course.seed_everything(bad)
