"""Cross-backend checks of the hand-written training steps: DP-SGD's per-example gradients and the GAN step.

Each test runs under the active Keras backend (TensorFlow in ``make test``'s first pass, JAX in its second,
PyTorch in ``make test-torch``) and compares with numbers that do not depend on the backend: a NumPy
computation of the same gradients, or a reference saved here (computed on TensorFlow and checked on JAX and
PyTorch when this test was written).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from utils import classify, gan, privacy

W1 = np.array([[0.5, -0.3, 0.8, 0.1], [-0.2, 0.7, -0.5, 0.4], [0.3, 0.2, 0.6, -0.9]], "float32")
B1 = np.array([0.1, -0.1, 0.0, 0.2], "float32")
W2 = np.array([[0.4, -0.6], [-0.3, 0.5], [0.9, 0.2], [-0.7, 0.8]], "float32")
B2 = np.array([0.05, -0.05], "float32")
X = np.array([[1.0, 0.5, -1.0], [0.2, -0.4, 0.9], [-0.7, 1.2, 0.3], [0.6, 0.6, 0.6], [-1.1, -0.2, 0.8]], "float32")
Y = np.array([0, 1, 1, 0, 1])


def _dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    model.set_weights([W1, B1, W2, B2])
    return model


def _numpy_per_example():
    """The per-example gradients of softmax cross-entropy through Dense-ReLU-Dense, by hand (float64)."""
    x = X.astype("float64")
    h_pre = x @ W1 + B1
    h = np.maximum(h_pre, 0)
    logits = h @ W2 + B2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = p - np.eye(2)[Y]  # (n, 2)
    d_h = (d_logits @ W2.T) * (h_pre > 0)  # (n, 4)
    return [x[:, :, None] * d_h[:, None, :], d_h, h[:, :, None] * d_logits[:, None, :], d_logits]


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("method", ["vectorized", "loop"])
def test_per_example_gradients_equal_the_numpy_computation(method):
    pe = privacy.per_example_gradients(_dense_model(), LOSS, X, Y.astype("int32"), method=method)
    for got, want in zip(pe, _numpy_per_example()):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-6)


def test_loss_gradients_is_the_mean_of_the_per_example_gradients():
    grads = privacy.loss_gradients(_dense_model(), LOSS, X, Y.astype("int32"))
    for got, want in zip(grads, _numpy_per_example()):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want.mean(0), rtol=1e-5, atol=1e-6)


def test_vectorized_and_loop_agree_on_the_small_cnn():
    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    rng = np.random.default_rng(1)
    x = rng.random((5, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 2, 5).astype("int32")
    a = privacy.per_example_gradients(model, LOSS, x, y)
    b = privacy.per_example_gradients(model, LOSS, x, y, method="loop")
    for g_a, g_b in zip(a, b):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(g_a), keras.ops.convert_to_numpy(g_b), rtol=1e-4, atol=1e-6
        )
    with pytest.raises(ValueError, match="method"):
        privacy.per_example_gradients(model, LOSS, x, y, method="jacobian")


def test_one_dp_sgd_step_without_noise_equals_numpy():
    # one step with q = 1 (every example sampled), sigma = 0: w <- w - lr * sum_i clip(g_i) / B
    model = _dense_model()
    run = privacy.train_dp_sgd(
        model,
        X,
        Y,
        epochs=1,
        expected_batch_size=len(X),
        learning_rate=0.5,
        l2_norm_clip=0.3,
        noise_multiplier=0.0,
        seed=0,
    )
    assert run["steps"] == 1 and run["examples_seen"] == len(X)
    pe = _numpy_per_example()
    norms = np.sqrt(sum((g.reshape(len(X), -1) ** 2).sum(1) for g in pe))
    factor = np.minimum(1.0, 0.3 / norms)
    want = [
        w - 0.5 * (g * factor.reshape((-1,) + (1,) * (g.ndim - 1))).sum(0) / len(X)
        for w, g in zip([W1, B1, W2, B2], pe)
    ]
    for got, w in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert run["mean_norm"][0] == pytest.approx(norms.mean(), rel=1e-5)


class _FixedNoiseGAN(gan.GAN):
    """A GAN whose noise is fixed (the same on every backend), for the cross-backend check."""

    def draw_latent(self, batch):
        z = np.random.default_rng(7).standard_normal((16, self.latent_dim)).astype("float32")
        return keras.ops.convert_to_tensor(z[:batch])


def _fixed_gan():
    keras.utils.set_random_seed(0)
    g = gan.build_generator(4, n_classes=2, width=2)
    d = gan.build_discriminator(n_classes=2, width=2, dropout=0.0)
    rng = np.random.default_rng(11)
    g.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") if w.ndim > 1 else w for w in g.get_weights()])
    d.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in d.get_weights()])
    model = _FixedNoiseGAN(g, d, 4, n_classes=2)
    model.compile(
        d_optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5), g_optimizer=keras.optimizers.Adam(2e-3, beta_1=0.5)
    )
    return model


#: losses of two GAN steps and weight sums after them, computed on TensorFlow (JAX and PyTorch agree)
GAN_REFERENCE = {
    "d": [2.1912310123443604, 2.6014456748962402],
    "g": [0.5471963882446289, 0.4913121163845062],
    "g_sum": [
        5.118283748626709,
        196.0102081298828,
        -0.0034795477986335754,
        0.15670448541641235,
        146.57632446289062,
        -2.903567314147949,
        1.9999977350234985,
        0.007989272475242615,
        -0.08289678394794464,
        1.7682883739471436,
        -1.8424899578094482,
        1.0040992498397827,
        -0.003920683171600103,
        -0.05927266925573349,
        0.7652810215950012,
        -0.05513061583042145,
        0.0015580165199935436,
    ],
    "d_sum": [
        15.996708869934082,
        -6.174793243408203,
        2.1415798664093018,
        -0.650378942489624,
        -1.3570482730865479,
        -0.2819840908050537,
        1.0330116748809814,
        -0.29470202326774597,
    ],
}


def test_two_gan_steps_give_the_same_numbers_on_every_backend():
    model = _fixed_gan()
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 2
    steps = gan.StepHistory()
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0, callbacks=[steps])
    got = dict(
        d=steps.d,
        g=steps.g,
        g_sum=[float(np.sum(w)) for w in model.generator.get_weights()],
        d_sum=[float(np.sum(w)) for w in model.discriminator.get_weights()],
    )
    for k, want in GAN_REFERENCE.items():
        np.testing.assert_allclose(got[k], want, rtol=1e-3, atol=1e-3, err_msg=k)
