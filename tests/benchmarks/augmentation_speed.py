"""Time one training epoch with Keras' shift/rotation layers or with ``classify.RandomAffine``.

    KERAS_BACKEND=jax python tests/benchmarks/augmentation_speed.py keras
    KERAS_BACKEND=jax python tests/benchmarks/augmentation_speed.py affine

Trains a one-convolution model on 2,560 random 28×28 images, batches of 128, behind the chosen
augmentation (shift ±8 %, rotation ±0.03 turns: chapter 2's chest-radiograph setting) and prints the
median seconds per epoch over three epochs after one warm-up epoch.  Run it under a whole-process timer
(e.g. ``/usr/bin/time -v``) to compare backends; chapter 2's decisions log quotes the figures.
Not collected by pytest (a benchmark, not a test).
"""

import statistics
import sys
import time

import keras
import numpy as np
from keras import layers

from utils import classify


def main(kind: str) -> float:
    augment = {
        "keras": [
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=1),
            layers.RandomRotation(0.03, fill_mode="constant", seed=1),
        ],
        "affine": [classify.RandomAffine(0.08, 0.03, seed=1)],
        "none": [],
    }[kind]
    rng = np.random.default_rng(0)
    x = rng.random((2560, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 2, len(x))
    inp = keras.Input((28, 28, 1))
    h = inp
    for layer in augment:
        h = layer(h)
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, padding="same", activation="relu")(h))
    model = keras.Model(inp, layers.Dense(2)(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)  # warm-up: tracing and compilation
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "affine"
    print(f"{keras.backend.backend()} {kind}: {main(kind):.3f} s per epoch")
