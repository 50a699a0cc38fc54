"""utils.classify: the chapter-2 models, training helpers and Grad-CAM."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from utils import classify, course

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keras():
    course.setup("fast", 0, fast={}, full={})  # deterministic ops, seeded
    import keras

    return keras


# ---------------------------------------------------------------------------
# data helpers
# ---------------------------------------------------------------------------


def test_as_float_images_adds_channel_and_scales():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    f = classify.as_float_images(x)
    assert f.shape == (1, 2, 2, 1) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, :, :, 0], [[0, 1], [0.2, 0.4]], atol=1e-7)
    assert classify.as_float_images(np.zeros((2, 4, 4, 3), np.uint8)).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="expected images"):
        classify.as_float_images(np.zeros((4, 4)))


def test_stratified_split_is_disjoint_complete_and_stratified():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    tr, va = classify.stratified_split(y, 100, seed=3)
    assert len(va) == 100 and len(tr) == 900
    assert not set(tr) & set(va) and set(tr) | set(va) == set(range(1000))
    np.testing.assert_array_equal(np.bincount(y[va]), [60, 30, 10])
    tr2, va2 = classify.stratified_split(y, 100, seed=3)
    np.testing.assert_array_equal(va, va2)
    sub = classify.stratified_subset(y, 200, seed=0)
    np.testing.assert_array_equal(np.bincount(y[sub]), [120, 60, 20])
    assert len(classify.stratified_subset(y, None)) == 1000


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def test_source_cnn_is_the_source_model_layer_for_layer(keras):
    m = classify.source_cnn()
    kinds = [type(l).__name__ for l in m.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [l.filters for l in m.layers if hasattr(l, "filters")] == [32, 64]
    assert all(l.kernel_size == (3, 3) and l.padding == "same" for l in m.layers if hasattr(l, "filters"))
    assert [l.units for l in m.layers if hasattr(l, "units")] == [512, 10]
    assert m.layers[-1].activation.__name__ == "softmax"
    assert [tuple(l.output.shape[1:]) for l in m.layers] == [
        (32, 32, 32),
        (16, 16, 32),
        (16, 16, 64),
        (8, 8, 64),
        (4096,),
        (512,),
        (10,),
    ]
    assert m.count_params() == 896 + 18_496 + 2_097_664 + 5_130


def test_cifar_variant_with_nothing_switched_on_has_the_source_parameters(keras):
    plain = classify.cifar_variant()
    assert plain.count_params() == classify.source_cnn().count_params()
    full = classify.cifar_variant(batchnorm=True, augment=True, dropout=0.3, l2=1e-4)
    kinds = {type(l).__name__ for l in full.layers}
    assert {"BatchNormalization", "RandomFlip", "RandomAffine", "Dropout"} <= kinds
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        full.predict(x, verbose=0), full.predict(x, verbose=0)
    )  # no augmentation at inference
    assert len(full.losses) == 4  # one L2 penalty per kernel


def test_medmnist_cnn_shapes_names_and_probabilities(keras):
    aug = classify.AUGMENTATION["fundus"]
    m = classify.medmnist_cnn((28, 28, 3), 5, width=8, augment=aug, mean=[0.5, 0.3, 0.2], std=0.2)
    assert tuple(m.get_layer("last_conv").output.shape[1:]) == (7, 7, 32)
    assert m.get_layer("logits").units == 5
    x = np.random.default_rng(1).uniform(size=(6, 28, 28, 3)).astype("float32")
    p = m.predict(x, verbose=0)
    assert p.shape == (6, 5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(p, m.predict(x, verbose=0))
    kinds = [type(l).__name__ for l in m.layers]
    assert "RandomAffine" in kinds and "RandomFlip" in kinds


def _scipy_affine(img, theta, ty, tx, scale, mode):
    """The same map as classify.affine_resample, written for scipy.ndimage (the reference)."""
    from scipy import ndimage

    c = (np.array(img.shape[:2]) - 1) / 2.0
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
    offset = c - rot @ (c + np.array([ty, tx]))
    return np.stack(
        [
            ndimage.affine_transform(img[..., k], rot, offset, order=1, mode=mode, cval=0.0)
            for k in range(img.shape[-1])
        ],
        axis=-1,
    )


@pytest.mark.parametrize("mode,scipy_mode", [("constant", "grid-constant"), ("reflect", "reflect")])
def test_affine_resample_matches_scipy(keras, mode, scipy_mode):
    rng = np.random.default_rng(3)
    x = rng.random((4, 13, 17, 2)).astype("float32")
    theta = np.array([0.0, 0.3, -1.1, 2.5], "float32")
    ty, tx = np.array([0.0, 2.5, -3.2, 1.0], "float32"), np.array([0.0, -1.7, 4.4, 0.3], "float32")
    scale = np.array([1.0, 1.1, 0.9, 1.3], "float32")
    got = keras.ops.convert_to_numpy(classify.affine_resample(x, theta, ty, tx, scale, fill_mode=mode))
    for i in range(len(x)):
        want = _scipy_affine(x[i], theta[i], ty[i], tx[i], scale[i], scipy_mode)
        np.testing.assert_allclose(got[i], want, atol=2e-5, err_msg=f"image {i}, fill_mode {mode}")
    np.testing.assert_allclose(got[0], x[0], atol=1e-6)  # the identity map


def test_affine_resample_shifts_by_whole_pixels_and_fills_zeros(keras):
    x = np.zeros((1, 9, 9, 1), "float32")
    x[0, 4, 4, 0] = 1.0
    z = np.zeros(1, "float32")
    got = keras.ops.convert_to_numpy(classify.affine_resample(x, z, z + 2, z - 3))
    assert got[0, 6, 1, 0] == pytest.approx(1.0) and got.sum() == pytest.approx(1.0)
    off = keras.ops.convert_to_numpy(classify.affine_resample(x, z, z + 20, z))
    assert not off.any()  # shifted out of the frame: zeros, not wrapped around
    with pytest.raises(ValueError, match="fill_mode"):
        classify.affine_resample(x, z, z, z, fill_mode="wrap")


def test_random_affine_is_identity_at_inference_seeded_and_bounded(keras):
    x = np.zeros((64, 21, 21, 1), "float32")
    x[:, 10, 10, 0] = 1.0
    layer = classify.RandomAffine(translate=0.1, seed=5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    a = keras.ops.convert_to_numpy(layer(x, training=True))
    b = keras.ops.convert_to_numpy(classify.RandomAffine(translate=0.1, seed=5)(x, training=True))
    np.testing.assert_array_equal(a, b)  # the same seed draws the same transforms
    assert not np.allclose(a, keras.ops.convert_to_numpy(layer(x, training=True)))  # a new draw each call
    rows, cols = np.indices((21, 21))
    mass = a[..., 0].sum(axis=(1, 2))
    dy = (a[..., 0] * rows).sum(axis=(1, 2)) / mass - 10
    dx = (a[..., 0] * cols).sum(axis=(1, 2)) / mass - 10
    assert np.all(np.abs(dy) <= 2.1 + 1e-4) and np.all(np.abs(dx) <= 2.1 + 1e-4)  # at most 10 % of 21 pixels
    assert np.std(dy) > 0.5 and np.std(dx) > 0.5  # and the shifts do vary
    rot = classify.RandomAffine(rotate=0.25, seed=1)
    y = np.zeros((200, 21, 21, 1), "float32")
    y[:, 10, 18, 0] = 1.0  # a point 8 pixels right of the centre
    r = keras.ops.convert_to_numpy(rot(y, training=True))[..., 0]
    m = r.sum(axis=(1, 2))
    ang = np.arctan2((r * (rows - 10)).sum(axis=(1, 2)) / m, (r * (cols - 10)).sum(axis=(1, 2)) / m)
    assert np.max(np.abs(ang)) <= np.pi / 2 + 0.05 and np.max(np.abs(ang)) > 1.2  # ±a quarter turn, and used
    with pytest.raises(ValueError, match="translate"):
        classify.RandomAffine(translate=1.5)


def test_random_affine_round_trips_through_a_saved_model(keras, tmp_path):
    m = classify.medmnist_cnn((28, 28, 1), 2, width=4, augment=classify.AUGMENTATION["chest_xray"])
    path = tmp_path / "m.keras"
    m.save(path)
    back = keras.saving.load_model(path)
    layer = next(l for l in back.layers if isinstance(l, classify.RandomAffine))
    assert (layer.translate, layer.rotate) == (0.08, 0.03)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(back.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-5)


def test_chest_xray_augmentation_never_mirrors():
    assert classify.AUGMENTATION["chest_xray"]["flip"] is None
    assert classify.TTA_FLIPS["chest_xray"] == ()
    assert classify.AUGMENTATION["ultrasound"]["flip"] == "horizontal"
    assert set(classify.MODALITY) == {"pneumoniamnist", "breastmnist", "retinamnist"}


# ---------------------------------------------------------------------------
# training helpers
# ---------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_zero(keras):
    s = classify.lr_schedule(1e-3, total_steps=100, warmup_steps=10)
    values = [float(keras.ops.convert_to_numpy(s(step))) for step in (0, 5, 10, 55, 100)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values[1] == pytest.approx(5e-4, rel=1e-4)
    assert values[2] == pytest.approx(1e-3, rel=1e-4)
    assert 0 < values[3] < 1e-3
    assert values[4] == pytest.approx(0.0, abs=1e-9)
    s0 = classify.lr_schedule(1e-3, total_steps=10)
    assert float(keras.ops.convert_to_numpy(s0(0))) == pytest.approx(1e-3)


def _tiny_model(keras, n_in=4):
    inp = keras.Input((n_in,))
    out = keras.layers.Dense(2, activation="softmax")(inp)
    return keras.Model(inp, out)


def _fit_recording_weights(keras, x, y, keep):
    """Fit a tiny model for 4 epochs with ``keep``; return it and a copy of its weights after every epoch."""
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: snapshots.append([np.array(w) for w in model.get_weights()])
    )
    model = _tiny_model(keras)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[record, keep])
    return model, snapshots


def test_keep_best_restores_the_weights_of_the_best_validation_epoch(keras):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    scores = iter([0.2, 0.9, 0.5, 0.1])
    keep = classify.KeepBest(x[:8], y[:8].argmax(1), score=lambda yt, p: next(scores))
    model, snapshots = _fit_recording_weights(keras, x, y, keep)
    assert keep.history == [0.2, 0.9, 0.5, 0.1] and keep.best_epoch == 1 and keep.best_score == 0.9
    for w, w_best in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(w, w_best)
    assert not np.array_equal(model.get_weights()[0], snapshots[3][0])


def test_keep_best_on_subsets_keeps_their_own_epochs_without_changing_the_main_selection(keras):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    # each set of cases (told apart by its labels) scores by a fixed schedule: the whole set peaks at epoch 1,
    # the first half (labels 0) at epoch 3, the second half (labels 1) at epoch 0
    labels = np.array([0] * 4 + [1] * 4)
    schedule = {"all": [0.2, 0.9, 0.5, 0.1], "first": [0.1, 0.2, 0.3, 0.4], "second": [0.4, 0.3, 0.2, 0.1]}
    epoch = {"n": -1}
    calls = []

    def score(yt, p):
        calls.append(len(yt))
        part = "all" if len(yt) == 8 else "first" if yt.mean() == 0 else "second"
        epoch["n"] += part == "all"  # the whole set is scored first in every epoch
        return schedule[part][epoch["n"]]

    keep = classify.KeepBest(x[:8], labels, score=score, subsets={"first": np.arange(4), "second": np.arange(4, 8)})
    model, snapshots = _fit_recording_weights(keras, x, y, keep)
    assert keep.best_epoch == 1 and keep.subset_best_epoch == {"first": 3, "second": 0}
    assert keep.subset_history["first"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    for w, w_best in zip(model.get_weights(), snapshots[1]):  # the model ends with the main selection
        np.testing.assert_array_equal(w, w_best)
    for name, e in (("first", 3), ("second", 0)):
        for w, w_best in zip(keep.subset_weights[name], snapshots[e]):
            np.testing.assert_array_equal(w, w_best)
    assert calls.count(8) == 4 and calls.count(4) == 8  # one prediction per epoch, scored three ways


def test_keep_best_refuses_a_subset_that_is_not_indices_into_the_validation_set(keras):
    x, y = np.zeros((8, 4), "float32"), np.arange(8) % 2
    for bad in (np.array([0, 8]), np.array([], int), np.array([0.5, 1.0]), np.array([[0, 1]])):
        with pytest.raises(ValueError, match="subset 'half'.*8 validation cases"):
            classify.KeepBest(x, y, subsets={"half": bad})


def test_fit_timed_counts_images_seen(keras):
    x = np.zeros((40, 4), "float32")
    y = keras.utils.to_categorical(np.arange(40) % 2, 2)
    model = _tiny_model(keras)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    hist, secs, seen = classify.fit_timed(model, x, y, epochs=3, batch_size=8)
    assert seen == 120 and secs > 0 and len(hist["loss"]) == 3


def test_predict_proba_averages_the_flipped_predictions(keras):
    m = classify.medmnist_cnn((8, 8, 1), 2, width=4, blocks=1)
    x = np.random.default_rng(2).uniform(size=(3, 8, 8, 1)).astype("float32")
    p = classify.predict_proba(m, x, flips=(2, 1))
    expected = (m.predict(x, verbose=0) + m.predict(x[:, :, ::-1], verbose=0) + m.predict(x[:, ::-1], verbose=0)) / 3
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def _blob_task(n, seed, size=16):
    """Class 1 = the left half is brighter than the right half; class 0 = the reverse."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 1, (n, size, size, 1)).astype("float32") * 0.5
    x[y == 1, :, : size // 2] += 0.4
    x[y == 0, :, size // 2 :] += 0.4
    return x, y


def test_train_ensemble_learns_and_is_repeatable(keras):
    x, y = _blob_task(192, 0)
    xv, yv = _blob_task(64, 1)

    def run(**kwargs):
        return classify.train_ensemble(
            lambda: classify.medmnist_cnn((16, 16, 1), 2, width=4, blocks=1),
            x,
            y,
            xv,
            yv,
            seeds=[0, 1],
            epochs=3,
            batch_size=32,
            lr=3e-3,
            weight_decay=1e-4,
            n_classes=2,
            **kwargs,
        )

    a, b = run(), run()
    halves = dict(zip(("select", "calibrate"), classify.stratified_split(yv, 32, seed=0)))
    c = run(select_on=halves)
    np.testing.assert_array_equal(c.predict(xv), a.predict(xv))  # the extra selection changes nothing else
    assert set(c.alternatives) == {"select", "calibrate"} and len(c.alternatives["select"]) == 2
    assert all(0 <= e < 3 for e in c.alternative_epochs["select"])
    chosen = c.predict(xv, selection="select")
    assert not np.array_equal(chosen, c.predict(xv)) or c.alternative_epochs["select"] == c.best_epochs
    np.testing.assert_array_equal(c.predict(xv), a.predict(xv))  # predict(selection=...) restored the weights
    main = [m.get_weights() for m in c.models]
    for k, model in enumerate(c.models):  # the same as setting each member's alternative weights by hand
        model.set_weights(c.alternatives["select"][k])
    np.testing.assert_array_equal(chosen, c.predict(xv))
    for k, model in enumerate(c.models):
        model.set_weights(main[k])
    with pytest.raises(KeyError, match="no selection 'other'.*'select', 'calibrate'"):
        c.predict(xv, selection="other")
    with pytest.raises(KeyError, match="select_on"):
        a.predict(xv, selection="select")
    assert a.images_seen == 2 * 3 * 192 and a.seconds > 0 and len(a.models) == 2
    assert all(0 <= e < 3 for e in a.best_epochs) and len(a.histories[0]["val_score"]) == 3
    np.testing.assert_array_equal(a.predict(xv), b.predict(xv))
    from utils.metrics import medmnist_auc

    assert medmnist_auc(yv, a.predict(xv)) > 0.9


# ---------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------


def _cam_net(keras, size=20):
    inp = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same")(h)
    a = keras.layers.ReLU(name="last_conv")(h)
    g = keras.layers.GlobalAveragePooling2D()(a)
    z = keras.layers.Dense(2, name="logits")(g)
    return keras.Model(inp, keras.layers.Activation("softmax", name="probs")(z))


def test_grad_cam_of_a_gap_dense_head_equals_the_class_activation_map(keras):
    """With GAP → Dense, dz_c/dA_k = W[k, c] / (h·w), so Grad-CAM is ReLU(Σ_k W[k, c] A_k) up to scale."""
    m = _cam_net(keras, 12)
    x = np.random.default_rng(4).uniform(size=(5, 12, 12, 1)).astype("float32")
    feats = keras.ops.convert_to_numpy(keras.Model(m.inputs[0], m.get_layer("last_conv").output)(x, training=False))
    w = keras.ops.convert_to_numpy(m.get_layer("logits").kernel)
    for c in (0, 1):
        cam = np.maximum(feats @ w[:, c], 0)
        cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-30)
        got = classify.grad_cam(m, x, class_index=c)
        assert got.shape == (5, 12, 12) and got.dtype == np.float32
        np.testing.assert_allclose(got, cam, atol=1e-5)


def test_grad_cam_is_normalised_upsampled_and_uses_the_predicted_class(keras):
    m = classify.medmnist_cnn((28, 28, 1), 2, width=4)
    x = np.random.default_rng(5).uniform(size=(4, 28, 28, 1)).astype("float32")
    cam = classify.grad_cam(m, x)
    assert cam.shape == (4, 28, 28)
    assert cam.min() >= 0 and np.all((cam.max(axis=(1, 2)) == pytest.approx(1.0)) | (cam.max(axis=(1, 2)) == 0))
    pred = m.predict(x, verbose=0).argmax(1)
    np.testing.assert_array_equal(cam, classify.grad_cam(m, x, class_index=pred))
    coarse = classify.grad_cam(m, x, upsample=False)
    assert coarse.shape == (4, 7, 7)
    assert classify.grad_cam(m, x[0]).shape == (1, 28, 28)


def test_grad_cam_highlights_the_informative_region_of_a_synthetic_task(keras):
    """Class 1 images hold a bright 4×4 square at a random place; Grad-CAM must point at it."""
    size, sq = 20, 4
    rng = np.random.default_rng(6)

    def make(n):
        x = rng.uniform(0, 0.3, (n, size, size, 1)).astype("float32")
        y = rng.integers(0, 2, n)
        masks = np.zeros((n, size, size), bool)
        for i in np.flatnonzero(y):
            r, c = rng.integers(0, size - sq + 1, 2)
            x[i, r : r + sq, c : c + sq, 0] += 0.7
            masks[i, max(r - 1, 0) : r + sq + 1, max(c - 1, 0) : c + sq + 1] = True  # the square and a 1-pixel rim
        return x, y, masks

    x, y, _ = make(600)
    keras.utils.set_random_seed(0)
    m = _cam_net(keras, size)
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=12, batch_size=32, verbose=0)
    xt, yt, masks = make(100)
    assert (m.predict(xt, verbose=0).argmax(1) == yt).mean() > 0.95
    pos = yt == 1
    cam = classify.grad_cam(m, xt[pos], class_index=1)
    area = masks[pos].mean()
    assert np.nanmean(classify.mass_inside(cam, masks[pos])) > 3 * area  # far more than a uniform map
    peaks = cam.reshape(len(cam), -1).argmax(axis=1)
    hits = masks[pos].reshape(len(cam), -1)[np.arange(len(cam)), peaks]
    assert hits.mean() > 0.9  # pointing game


def test_grad_cam_names_the_supported_backends(keras, monkeypatch):
    m = _cam_net(keras, 8)
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(NotImplementedError, match="tensorflow, jax and torch"):
        classify.grad_cam(m, np.zeros((1, 8, 8, 1), "float32"), class_index=0)


_OTHER_BACKEND_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    from utils import classify
    assert keras.backend.backend() == "{backend}"
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 1))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last_conv")(inp)
    z = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(a))
    m = keras.Model(inp, keras.layers.Activation("softmax")(z))
    x = np.random.default_rng(0).uniform(size=(3, 10, 10, 1)).astype("float32")
    feats = keras.ops.convert_to_numpy(keras.Model(inp, a)(x, training=False))
    w = keras.ops.convert_to_numpy(m.get_layer("logits").kernel)
    cam = np.maximum(feats @ w[:, 2], 0)
    cam = cam / cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(classify.grad_cam(m, x, class_index=2), cam, atol=1e-5)
    print("ok")
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_grad_cam_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND_SCRIPT.format(backend=backend)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_mass_inside_and_map_correlation():
    cam = np.zeros((2, 4, 4))
    cam[0, 0, 0] = 1.0
    cam[1] = 1.0
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    np.testing.assert_allclose(classify.mass_inside(cam, mask), [1.0, 0.25])
    assert np.isnan(classify.mass_inside(np.zeros((1, 4, 4)), mask)[0])
    a = np.random.default_rng(0).normal(size=(3, 5, 5))
    np.testing.assert_allclose(classify.map_correlation(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(classify.map_correlation(a, -a), -1.0)
    assert np.isnan(classify.map_correlation(a[:1], np.ones((1, 5, 5)))[0])


def test_figures_render():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = np.random.default_rng(0).integers(0, 255, (5, 8, 8), dtype=np.uint8)
    fig = classify.image_grid(imgs, [str(i) for i in range(5)], ncols=3, overlay=np.zeros((5, 8, 8)), suptitle="grid")
    assert len(fig.axes) == 6
    fig2 = classify.plot_history({"a": {"loss": [2, 1], "val_loss": [2.5, 1.5], "accuracy": [0.1, 0.2]}})
    assert len(fig2.axes) == 2
    plt.close("all")


def test_binary_cnn_has_one_sigmoid_output():
    import keras

    model = classify.binary_cnn((28, 28, 1), width=4, blocks=1)
    out = keras.ops.convert_to_numpy(model(np.zeros((2, 28, 28, 1), "float32")))
    assert out.shape == (2, 1) and np.all((out > 0) & (out < 1))
