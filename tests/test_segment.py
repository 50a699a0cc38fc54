"""utils.segment: data, leak-free splits, U-Net / Attention U-Net, losses, metrics, a tiny training run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from utils import course, reference, segment


@pytest.fixture(scope="module")
def keras():
    course.setup("fast", 0, fast={}, full={})  # deterministic ops, seeded
    import keras

    return keras


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def test_normalize_percentile():
    x = np.arange(1001, dtype=np.uint16)
    y = segment.normalize_percentile(x, 0, 100)
    assert y.dtype == np.float32 and y[0] == 0 and y[-1] == pytest.approx(1)


def test_phantom_set_shapes_and_determinism():
    x, y = segment.phantom_set(6, 64, seed=3)
    assert x.shape == y.shape == (6, 64, 64, 1) and x.dtype == y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0} and all(m.sum() > 0 for m in y)
    x2, y2 = segment.phantom_set(3, 64, seed=3)
    np.testing.assert_array_equal(x[:3], x2)
    np.testing.assert_array_equal(y[:3], y2)


# ---------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------


def test_tile_boxes_cover_without_overlap():
    boxes = segment.tile_boxes((100, 130), 32)
    assert len(boxes) == 3 * 4
    cover = np.zeros((100, 130), int)
    for r0, c0, r1, c1 in boxes:
        cover[r0:r1, c0:c1] += 1
    assert cover.max() == 1 and cover.sum() == 12 * 32 * 32
    with pytest.raises(ValueError, match="tile must be"):
        segment.tile_boxes((10, 10), 11)


def test_region_split_no_test_pixel_is_in_training():
    shape = (512, 512)
    train, test = segment.region_split(shape, 64, (256, 256, 512, 512))
    assert len(test) == 16 and len(train) == 48
    assert segment.overlap_pixels(shape, train, test) == 0
    # the proof, pixel by pixel: mark every pixel any training tile reads
    seen = np.zeros(shape, bool)
    for r0, c0, r1, c1 in train:
        seen[r0:r1, c0:c1] = True
    for r0, c0, r1, c1 in test:
        assert not seen[r0:r1, c0:c1].any()
    # tiles that straddle the test region's edge are dropped, not shared
    train2, test2 = segment.region_split(shape, 96, (200, 200, 512, 512))
    assert segment.overlap_pixels(shape, train2, test2) == 0
    assert len(train2) + len(test2) < len(segment.tile_boxes(shape, 96))
    # overlapping tiles are detected
    assert segment.overlap_pixels(shape, np.array([[0, 0, 10, 10]]), np.array([[5, 5, 15, 15]])) == 25


def test_extract_tiles():
    img = np.arange(16).reshape(4, 4)
    tiles = segment.extract_tiles(img, segment.tile_boxes(img.shape, 2))
    assert tiles.shape == (4, 2, 2)
    np.testing.assert_array_equal(tiles[3], [[10, 11], [14, 15]])


def test_split_by_image_is_disjoint_and_complete():
    tr, te = segment.split_by_image(50, 10, seed=1)
    assert len(te) == 10 and not set(tr) & set(te) and set(tr) | set(te) == set(range(50))
    tr2, te2 = segment.split_by_image(50, 10, seed=1)
    np.testing.assert_array_equal(te, te2)
    with pytest.raises(ValueError):
        segment.split_by_image(5, 5)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def test_dice_and_iou_known_values_and_sklearn():
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[0:4, 0:5] = 1  # 20 pixels
    b[2:6, 0:5] = 1  # 20 pixels, 10 shared
    assert segment.dice(a, b) == pytest.approx(0.5)
    assert segment.iou(a, b) == pytest.approx(10 / 30)
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random((2, 32, 32)) > rng.random(2)[:, None, None]
        assert segment.dice(p, q) == pytest.approx(f1_score(p.ravel(), q.ravel(), zero_division=1.0))
        assert segment.iou(p, q) == pytest.approx(jaccard_score(p.ravel(), q.ravel(), zero_division=1.0))
        d, j = segment.dice(p, q), segment.iou(p, q)
        assert j == pytest.approx(d / (2 - d))  # IoU = Dice / (2 - Dice)


def test_empty_mask_conventions():
    empty = np.zeros((30, 40), np.uint8)
    full = disc((30, 40), 15, 20, 5)
    assert segment.dice(empty, empty) == 1.0 and segment.iou(empty, empty) == 1.0
    assert segment.dice(empty, full) == 0.0 and segment.iou(full, empty) == 0.0
    assert segment.hd95(empty, empty) == 0.0 and segment.average_surface_distance(empty, empty) == 0.0
    assert segment.hd95(empty, full) == pytest.approx(50.0)  # the diagonal of a 30x40 image
    assert segment.hd95(full, empty, spacing=(2.0, 1.0)) == pytest.approx(np.hypot(60, 40))
    assert np.isnan(segment.hd95(full, empty, empty=np.nan))
    assert segment.average_surface_distance(full, empty, empty=7) == 7.0


@pytest.mark.parametrize("k", [1, 3, 6])
def test_hd95_of_two_offset_discs_is_the_offset(k):
    a = disc((96, 96), 48, 40, 20)
    b = disc((96, 96), 48, 40 + k, 20)
    assert segment.hd95(a, b) == pytest.approx(k, abs=1.0)
    assert segment.hausdorff(a, b) == pytest.approx(k, abs=0.5)
    # the mean surface distance of two shifted circles is about 2k/pi
    assert segment.average_surface_distance(a, b) == pytest.approx(2 * k / np.pi, abs=0.5)
    assert segment.hd95(a, a) == 0.0


def _row(n, pixels):
    m = np.zeros((1, n), bool)  # one row: every foreground pixel is a surface pixel (the border is background)
    m[0, list(pixels)] = True
    return m


def test_hd95_conventions_by_hand_one_stray_pixel():
    """A = pixels 0..9 of a 1x30 image, B = A plus pixel 29.

    d(A→B): ten zeros.  d(B→A): ten zeros and 20 (pixel 29 to pixel 9).
    MONAI ("max"): P95 of [0]*10 + [20] (11 values) is at rank 0.95 * 10 = 9.5, halfway between 0 and 20 -> 10;
    the other direction gives 0, so HD95 = 10.
    MedPy ("pooled"): P95 of [0]*20 + [20] (21 values) is at rank 0.95 * 20 = 19, a zero -> HD95 = 0.
    """
    a, b = _row(30, range(10)), _row(30, [*range(10), 29])
    assert segment.hd95(a, b) == pytest.approx(10.0)
    assert segment.hd95(a, b, convention="max") == pytest.approx(10.0)
    assert segment.hd95(b, a, convention="max") == pytest.approx(10.0)  # symmetric
    assert segment.hd95(a, b, convention="pooled") == pytest.approx(0.0)
    assert segment.hd95(b, a, convention="pooled") == pytest.approx(0.0)
    # the Hausdorff distance (100th percentile) is the same under both: 20
    assert segment.hausdorff(a, b) == segment.hausdorff(a, b, convention="pooled") == pytest.approx(20.0)


def test_hd95_conventions_by_hand_two_stray_pixels():
    """A = pixels 0..9 of a 1x30 image, B = A plus pixels 28 and 29.

    d(A→B): ten zeros; d(B→A): ten zeros, 19 and 20.
    "max": P95 of the 12 values of d(B→A) at rank 0.95 * 11 = 10.45: 19 + 0.45 * (20 - 19) = 19.45.
    "pooled": P95 of the 22 values at rank 0.95 * 21 = 19.95: 0 + 0.95 * (19 - 0) = 18.05.
    With spacing 0.5 along the row both halve.
    """
    a, b = _row(30, range(10)), _row(30, [*range(10), 28, 29])
    assert segment.hd95(a, b) == pytest.approx(19.45)
    assert segment.hd95(a, b, convention="pooled") == pytest.approx(18.05)
    assert segment.hd95(a, b, spacing=(1.0, 0.5)) == pytest.approx(19.45 / 2)
    assert segment.hd95(a, b, spacing=(1.0, 0.5), convention="pooled") == pytest.approx(18.05 / 2)
    with pytest.raises(ValueError, match="convention"):
        segment.hd95(a, b, convention="medpy")


def test_hd95_conventions_agree_on_symmetric_errors():
    a = disc((64, 64), 32, 28, 12)
    b = disc((64, 64), 32, 32, 12)  # the same disc shifted: both directions see the same distances
    assert segment.hd95(a, b, convention="pooled") == pytest.approx(segment.hd95(a, b), abs=1e-9)


def test_surface_distances_scale_with_spacing():
    a = disc((64, 64), 32, 28, 12)
    b = disc((64, 64), 32, 32, 12)
    assert segment.hausdorff(a, b, spacing=(0.5, 0.5)) == pytest.approx(0.5 * segment.hausdorff(a, b))


def test_soft_dice_loss_matches_keras_dice(keras):
    rng = np.random.default_rng(0)
    y = (rng.random((3, 16, 16, 1)) > 0.7).astype("float32")
    p = rng.random((3, 16, 16, 1)).astype("float32")
    ours = float(segment.soft_dice_loss(y, p, smooth=0.0))
    ref = float(keras.losses.Dice(axis=(1, 2, 3))(y, p))
    assert ours == pytest.approx(ref, rel=1e-5)
    # by hand, image by image
    manual = np.mean([1 - 2 * (yi * pi).sum() / (yi.sum() + pi.sum()) for yi, pi in zip(y, p)])
    assert ours == pytest.approx(manual, rel=1e-5)
    assert float(segment.soft_dice_loss(y, y, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    zero = np.zeros((1, 4, 4, 1), "float32")
    assert float(segment.soft_dice_loss(zero, zero)) == pytest.approx(0.0)  # smoothing: empty = perfect


def test_soft_dice_loss_plain_and_squared_by_hand(keras):
    """Plain sums (nnU-Net, keras.losses.Dice) against V-Net's squared denominator, on one 2x2 image.

    y = [1, 1, 0, 0], p = [0.5, 1.0, 0.5, 0]: sum(y p) = 1.5, sum(y) = 2, sum(p) = 2, sum(p^2) = 1.5.
    plain:   1 - 2 * 1.5 / (2 + 2)   = 0.25
    squared: 1 - 2 * 1.5 / (2 + 1.5) = 1 - 3 / 3.5 = 1/7
    """
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
    p = np.array([0.5, 1.0, 0.5, 0.0], "float32").reshape(1, 2, 2, 1)
    assert float(segment.soft_dice_loss(y, p, smooth=0.0)) == pytest.approx(0.25, abs=1e-6)
    assert float(segment.soft_dice_loss(y, p, smooth=0.0, squared=True)) == pytest.approx(1 / 7, abs=1e-6)
    # binary predictions: p^2 = p, so both forms agree
    assert float(segment.soft_dice_loss(y, y[:, ::-1], smooth=1.0, squared=True)) == pytest.approx(
        float(segment.soft_dice_loss(y, y[:, ::-1], smooth=1.0)), abs=1e-6
    )


def test_dice_bce_loss_is_dice_plus_cross_entropy(keras):
    rng = np.random.default_rng(1)
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    bce = float(keras.losses.BinaryCrossentropy()(y, p))
    expected = float(segment.soft_dice_loss(y, p)) + 0.5 * bce
    assert float(segment.dice_bce_loss(y, p, bce_weight=0.5)) == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def test_unet_and_attention_unet_shapes(keras):
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    for gates in (False, True):
        m = segment.build_unet((32, 32, 1), 4, 3, attention_gates=gates)
        out = keras.ops.convert_to_numpy(m(x))
        assert out.shape == (2, 32, 32, 1) and ((out >= 0) & (out <= 1)).all()
    flexible = segment.build_unet((None, None, 1), 4, 2)
    assert keras.ops.convert_to_numpy(flexible(np.zeros((1, 48, 40, 1), "float32"))).shape == (1, 48, 40, 1)
    assert segment.build_unet(base_filters=4, depth=2, attention_gates=True).name == "attention_unet"


def test_attention_gate_coefficients(keras):
    m = segment.build_unet((32, 32, 1), 4, 3, attention_gates=True)
    x = np.random.default_rng(0).random((3, 32, 32, 1)).astype("float32")
    maps = segment.attention_maps(m, x)
    assert sorted(maps) == ["att0", "att1", "att2"]
    assert maps["att0"].shape == (3, 32, 32) and maps["att1"].shape == (3, 16, 16) and maps["att2"].shape == (3, 8, 8)
    for a in maps.values():
        assert ((a >= 0) & (a <= 1)).all()
    with pytest.raises(ValueError, match="no attention gates"):
        segment.attention_maps(segment.build_unet((32, 32, 1), 4, 2), x)


def test_gate_open_bias_starts_the_gates_open(keras):
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    closed = segment.build_unet((32, 32, 1), 4, 2, attention_gates=True)
    opened = segment.build_unet((32, 32, 1), 4, 2, attention_gates=True, gate_open_bias=3.0)
    assert float(opened.get_layer("att0_psi").get_weights()[1][0]) == 3.0
    assert float(closed.get_layer("att0_psi").get_weights()[1][0]) == 0.0
    a_open = segment.attention_maps(opened, x)["att0"]
    a_closed = segment.attention_maps(closed, x)["att0"]
    assert a_open.mean() > 0.85  # about sigmoid(3) = 0.95 before training
    assert abs(a_closed.mean() - 0.5) < 0.2


def test_attention_gate_formula(keras):
    """The gate computes sigmoid(psi * relu(W_x x + W_g g + b) + b_psi), then up-samples and multiplies."""
    from keras import layers

    rng = np.random.default_rng(0)
    xin, gin = keras.Input((8, 8, 3)), keras.Input((4, 4, 5))
    gated, alpha = segment.attention_gate(xin, gin, 2, name="g")
    model = keras.Model([xin, gin], [gated, alpha])
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    x = rng.normal(size=(1, 8, 8, 3)).astype("float32")
    g = rng.normal(size=(1, 4, 4, 5)).astype("float32")
    out, a = (keras.ops.convert_to_numpy(t) for t in model([x, g]))
    wx = model.get_layer("g_theta_x").get_weights()[0]
    wg, bg = model.get_layer("g_phi_g").get_weights()
    wp, bp = model.get_layer("g_psi").get_weights()
    q = np.maximum(reference.conv2d(x, wx, stride=2, padding="same") + reference.conv2d(g, wg, bg), 0)
    psi = 1 / (1 + np.exp(-(reference.conv2d(q, wp, bp))))
    up = keras.ops.convert_to_numpy(layers.UpSampling2D(2, interpolation="bilinear")(psi.astype("float32")))
    np.testing.assert_allclose(a, up, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, x * up, rtol=1e-4, atol=1e-5)


def test_numpy_attention_matches_keras_multihead_attention(keras):
    """softmax(Q K^T / sqrt(d_k)) V in NumPy equals keras.layers.MultiHeadAttention on the same weights."""
    rng = np.random.default_rng(0)
    n_tok, d_model, heads, d_k = 7, 8, 2, 4
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=d_k)
    x = rng.normal(size=(1, n_tok, d_model)).astype("float32")
    out, scores = mha(x, x, return_attention_scores=True)
    wq, bq, wk, bk, wv, bv, wo, bo = mha.get_weights()  # (d_model, heads, d_k) projections, (heads, d_k, d_model) out
    x0 = x[0].astype(np.float64)
    heads_out, weights = [], []
    for h in range(heads):
        q, k, v = x0 @ wq[:, h] + bq[h], x0 @ wk[:, h] + bk[h], x0 @ wv[:, h] + bv[h]
        o, w = reference.scaled_dot_product_attention(q, k, v)
        heads_out.append(o @ wo[h])
        weights.append(w)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores)[0], np.stack(weights), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0], sum(heads_out) + bo, rtol=1e-4, atol=1e-5)
    # and keras.ops gives the same as NumPy for the bare formula
    from keras import ops

    q, k, v = (rng.normal(size=(5, 3)) for _ in range(3))
    ko = ops.matmul(ops.softmax(ops.matmul(q, ops.transpose(k)) / np.sqrt(3.0), axis=-1), v)
    np.testing.assert_allclose(ops.convert_to_numpy(ko), reference.scaled_dot_product_attention(q, k, v)[0], rtol=1e-5)


def test_self_attention_bottleneck(keras):
    m = segment.build_unet((32, 32, 1), 4, 2, self_attention=True)
    assert m.name == "unet_mhsa" and m.get_layer("bottleneck_mhsa_mha") is not None
    assert keras.ops.convert_to_numpy(m(np.zeros((1, 32, 32, 1), "float32"))).shape == (1, 32, 32, 1)
    with pytest.raises(ValueError, match="fixed input size"):
        segment.build_unet((None, None, 1), 4, 2, self_attention=True)


def test_augment_d4():
    x = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1).astype("float32")
    xa, ya = segment.augment_d4(x, x.copy())
    assert xa.shape == (16, 3, 3, 1)
    np.testing.assert_array_equal(xa, ya)
    assert len({xa[i].tobytes() for i in range(0, 16, 2)}) == 8  # 8 distinct transforms of image 0


# ---------------------------------------------------------------------------
# a tiny training run
# ---------------------------------------------------------------------------


def test_tiny_training_learns_on_phantoms(keras):
    x, y = segment.phantom_set(80, 64, seed=0)
    tr, te = segment.split_by_image(80, 16, seed=0)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)  # the initial weights, whatever the tests before this one drew
    model = segment.build_unet((64, 64, 1), 8, 3)  # the plain U-Net is faster; the gates are tested above
    run = segment.train_segmenter(model, x[tr], y[tr], epochs=5, batch_size=4, learning_rate=3e-3)
    _, pred = segment.predict_masks(model, x[te])
    scores = segment.segmentation_scores(y[te], pred)
    empty = segment.segmentation_scores(y[te], np.zeros_like(pred))
    assert empty["dice"].mean() == 0.0  # every test phantom holds a lesion
    assert scores["dice"].mean() > 0.3, scores["dice"]  # the empty prediction scores 0; this run gives ~0.58
    assert run["n_images_seen"] == 5 * 64 and run["images_per_second"] > 0
    assert time.perf_counter() - t0 < 120


def test_training_keeps_the_checkpoint_with_the_best_validation_dice(keras):
    x, y = segment.phantom_set(24, 64, seed=1)
    tr, va = np.arange(16), np.arange(16, 24)
    keras.utils.set_random_seed(0)
    model = segment.build_unet((64, 64, 1), 4, 1, batch_norm=True)  # small: the selection is tested, not the fit
    run = segment.train_segmenter(
        model, x[tr], y[tr], epochs=3, batch_size=4, learning_rate=3e-3, validation=(x[va], y[va]), verbose=0
    )
    assert len(run["val_dice"]) == 3 and 1 <= run["best_epoch"] <= 3
    assert run["best_val_dice"] == max(run["val_dice"])
    assert run["val_dice"].index(run["best_val_dice"]) == run["best_epoch"] - 1  # the earliest best epoch
    # the model holds the weights of that epoch: its validation Dice is the best one recorded
    _, pred = segment.predict_masks(model, x[va], batch_size=4)
    assert segment.segmentation_scores(y[va], pred)["dice"].mean() == pytest.approx(run["best_val_dice"], abs=1e-9)
    assert set(segment.segmentation_scores(y[va], pred, metrics=("dice",))) == {"dice"}
    with pytest.raises(ValueError, match="unknown metrics"):
        segment.segmentation_scores(y[va], pred, metrics=("accuracy",))


def test_mean_inside_outside():
    v = np.array([[1.0, 2.0], [3.0, 4.0]])
    m = np.array([[1, 0], [0, 1]])
    assert segment.mean_inside_outside(v, m) == (2.5, 2.5)
    assert segment.mean_inside_outside(v, v > 2) == (3.5, 1.5)
    with pytest.raises(ValueError, match="some pixels"):
        segment.mean_inside_outside(v, np.ones((2, 2)))


def test_segmentation_scores():
    t = np.stack([disc((32, 32), 16, 16, 6), disc((32, 32), 10, 10, 4)])[..., None]
    p = np.stack([disc((32, 32), 16, 17, 6), np.zeros((32, 32), np.uint8)])[..., None]
    s = segment.segmentation_scores(t, p)
    assert set(s) == {"dice", "iou", "hd95", "assd"} and s["dice"].shape == (2,)
    assert 0.8 < s["dice"][0] < 1 and s["dice"][1] == 0 and s["hd95"][1] == pytest.approx(np.hypot(32, 32))
