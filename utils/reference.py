"""Plain NumPy versions of the formulas the course teaches, to check Keras layers against.

The convolution layer of a CNN (what Keras' ``Conv2D`` computes; strictly a
cross-correlation, since the kernel is not flipped) for input ``x`` of shape
``(H, W, C_in)``, kernel ``w`` of shape ``(k_h, k_w, C_in, C_out)`` and bias
``b`` is

.. math::

    y_{i,j,o} = b_o + \\sum_{u=0}^{k_h-1} \\sum_{v=0}^{k_w-1} \\sum_{c=0}^{C_{in}-1}
                w_{u,v,c,o}\\; x_{s i + u,\\; s j + v,\\; c}

with stride ``s`` and, for ``padding="same"``, zeros added so that the output
has ``ceil(H / s)`` rows.  Max pooling with a ``p × p`` window and stride ``p``
is :math:`y_{i,j,c} = \\max_{0 \\le u,v < p} x_{p i + u,\\, p j + v,\\, c}`.
Scaled dot-product attention is
:math:`\\mathrm{softmax}(Q K^\\top / \\sqrt{d_k})\\, V` (row-wise softmax).
"""

from __future__ import annotations

import numpy as np


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow/Keras 'same' padding: total = max((ceil(n/s)-1)*s + k - n, 0), extra on the bottom/right."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def conv2d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, stride: int = 1, padding: str = "valid"
) -> np.ndarray:
    """2D convolution (cross-correlation) of a batch ``x`` (N, H, W, C_in) with ``w`` (k_h, k_w, C_in, C_out)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x must be (N, H, W, C) and w (k_h, k_w, C_in, C_out); got {x.shape} and {w.shape}")
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"x has {x.shape[3]} channels but the kernel expects {w.shape[2]}")
    kh, kw = w.shape[:2]
    if padding == "same":
        (t, bt), (l, r) = _same_padding(x.shape[1], kh, stride), _same_padding(x.shape[2], kw, stride)
        x = np.pad(x, ((0, 0), (t, bt), (l, r), (0, 0)))
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    n, h, wd, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, oh, ow, w.shape[3]))
    for u in range(kh):  # sum over kernel offsets; each term is a matrix product over channels
        for v in range(kw):
            patch = x[:, u : u + stride * (oh - 1) + 1 : stride, v : v + stride * (ow - 1) + 1 : stride, :]
            y += patch @ w[u, v]
    if b is not None:
        y += np.asarray(b, dtype=np.float64)
    return y


def max_pool2d(x: np.ndarray, pool: int = 2, stride: int | None = None) -> np.ndarray:
    """Max pooling of ``x`` (N, H, W, C) with a ``pool × pool`` window ('valid' padding)."""
    x = np.asarray(x)
    stride = stride or pool
    n, h, w, c = x.shape
    oh, ow = (h - pool) // stride + 1, (w - pool) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"pool {pool} is larger than the input {h}×{w}")
    out = np.full((n, oh, ow, c), -np.inf)
    for u in range(pool):
        for v in range(pool):
            out = np.maximum(
                out, x[:, u : u + stride * (oh - 1) + 1 : stride, v : v + stride * (ow - 1) + 1 : stride, :]
            )
    return out


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def scaled_dot_product_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(Q Kᵀ / sqrt(d_k)) V`` over the last two axes; returns (output, attention weights)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    weights = softmax(scores, axis=-1)
    return weights @ v, weights
