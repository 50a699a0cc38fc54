"""The NumPy formulas of utils.reference agree with the Keras layers they describe."""

import numpy as np
import pytest

from utils import reference


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


@pytest.mark.parametrize(
    "padding,stride,k", [("same", 1, 3), ("valid", 1, 3), ("same", 2, 3), ("valid", 2, 5), ("same", 2, 4)]
)
def test_conv2d_matches_keras_conv2d(keras, padding, stride, k):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 9, 3)).astype("float32")
    layer = keras.layers.Conv2D(5, k, strides=stride, padding=padding)
    layer.build(x.shape)
    w, b = (keras.ops.convert_to_numpy(v) for v in layer.weights)
    b = b + rng.normal(size=b.shape).astype("float32")  # a non-zero bias, set on the layer too
    layer.bias.assign(b)
    y_keras = keras.ops.convert_to_numpy(layer(x))
    y_np = reference.conv2d(x, w, b, stride=stride, padding=padding)
    assert y_np.shape == y_keras.shape
    np.testing.assert_allclose(y_np, y_keras, rtol=1e-5, atol=1e-5)


def test_conv2d_is_cross_correlation_not_flipped_convolution():
    x = np.zeros((1, 3, 3, 1))
    x[0, 0, 0, 0] = 1.0  # an impulse at the top-left corner
    w = np.arange(9.0).reshape(3, 3, 1, 1)
    y = reference.conv2d(x, w, padding="same")
    # the output at (1, 1) sees the impulse through kernel offset (0, 0): no flip
    assert y[0, 1, 1, 0] == w[0, 0, 0, 0]
    assert y[0, 0, 0, 0] == w[1, 1, 0, 0]


def test_conv2d_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        reference.conv2d(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 3, 1)))


@pytest.mark.parametrize("pool,stride", [(2, None), (3, None), (3, 1)])
def test_max_pool_matches_keras(keras, pool, stride):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 10, 7, 4)).astype("float32")
    y_keras = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(pool, strides=stride)(x))
    np.testing.assert_array_equal(reference.max_pool2d(x, pool, stride), y_keras)


def test_max_pool_too_large():
    with pytest.raises(ValueError, match="larger"):
        reference.max_pool2d(np.zeros((1, 2, 2, 1)), 3)


def test_attention_matches_keras_multi_head_attention(keras):
    rng = np.random.default_rng(2)
    b, t, s, d, heads, dk = 2, 5, 6, 8, 2, 4
    query = rng.normal(size=(b, t, d)).astype("float32")
    value = rng.normal(size=(b, s, d)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=dk)
    out_keras, scores_keras = mha(query, value, return_attention_scores=True)
    wq, bq, wk, bk, wv, bv, wo, bo = (keras.ops.convert_to_numpy(w) for w in mha.weights)
    q = np.einsum("btd,dhk->bhtk", query, wq) + bq[None, :, None, :]
    k = np.einsum("bsd,dhk->bhsk", value, wk) + bk[None, :, None, :]
    v = np.einsum("bsd,dhk->bhsk", value, wv) + bv[None, :, None, :]
    heads_out, weights = reference.scaled_dot_product_attention(q, k, v)
    out = np.einsum("bhtk,hkd->btd", heads_out, wo) + bo
    np.testing.assert_allclose(weights, keras.ops.convert_to_numpy(scores_keras), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(out_keras), rtol=1e-4, atol=1e-4)


def test_attention_rows_sum_to_one():
    rng = np.random.default_rng(3)
    _, w = reference.scaled_dot_product_attention(
        rng.normal(size=(4, 3)), rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    )
    np.testing.assert_allclose(w.sum(axis=-1), 1.0)
