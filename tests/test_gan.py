"""Tests for utils.gan: the GAN objective, the builders and train step, and the GAN metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from utils import gan

# ---------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------


def test_bce_from_logits_equals_minimax_terms():
    rng = np.random.default_rng(0)
    lr = rng.normal(0.5, 2.0, (64, 1)).astype("float32")
    lf = rng.normal(-0.5, 2.0, (64, 1)).astype("float32")
    terms = gan.minimax_terms(lr, lf)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    # discriminator loss = -V ; non-saturating generator loss = -mean log D(G(z))
    d_loss, g_ns = gan.gan_losses(lr, lf)
    assert float(d_loss) == pytest.approx(-terms["V"], rel=1e-5)
    assert float(g_ns) == pytest.approx(terms["g_non_saturating"], rel=1e-5)
    assert float(bce(np.ones_like(lr), lr)) == pytest.approx(-terms["mean_log_D_real"], rel=1e-5)
    assert float(bce(np.zeros_like(lf), lf)) == pytest.approx(-terms["mean_log_1m_D_fake"], rel=1e-5)
    _, g_mm = gan.gan_losses(lr, lf, generator_loss="minimax")
    assert float(g_mm) == pytest.approx(terms["mean_log_1m_D_fake"], rel=1e-5)
    # against the textbook formulas with explicit probabilities
    sig = lambda t: 1 / (1 + np.exp(-t.astype("float64")))  # noqa: E731
    v = np.mean(np.log(sig(lr))) + np.mean(np.log(1 - sig(lf)))
    assert terms["V"] == pytest.approx(v, rel=1e-9)


def test_gan_losses_rejects_unknown_generator_loss():
    with pytest.raises(ValueError, match="generator_loss"):
        gan.gan_losses(np.zeros((2, 1)), np.zeros((2, 1)), generator_loss="wasserstein")


def test_non_saturating_gradient_is_larger_when_d_rejects_fakes():
    # d/dl of log(1 - σ(l)) is -σ(l) (→ 0 when l → -∞); d/dl of -log σ(l) is σ(l) - 1 (→ -1)
    l = -6.0
    s = 1 / (1 + np.exp(-l))
    assert abs(-s) < 0.01 and abs(s - 1) > 0.99


# ---------------------------------------------------------------------------
# builders and training step
# ---------------------------------------------------------------------------


def test_builders_shapes_and_ranges():
    g = gan.build_generator(8, width=4)
    d = gan.build_discriminator(width=4)
    z = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    x = keras.ops.convert_to_numpy(g(z))
    assert x.shape == (3, 28, 28, 1) and x.min() >= -1 and x.max() <= 1
    assert keras.ops.convert_to_numpy(d(x)).shape == (3, 1)
    gc = gan.build_generator(8, n_classes=2, width=4)
    dc = gan.build_discriminator(n_classes=2, width=4)
    oh = np.eye(2, dtype="float32")[[0, 1, 1]]
    xc = keras.ops.convert_to_numpy(gc([z, oh]))
    assert keras.ops.convert_to_numpy(dc([xc, oh])).shape == (3, 1)
    dt = gan.build_discriminator(width=4, head="tanh")
    assert dt.layers[-1].activation.__name__ == "tanh"
    with pytest.raises(ValueError, match="head"):
        gan.build_discriminator(head="softmax")
    with pytest.raises(ValueError, match="latent_dim"):
        gan.build_generator(0)


def _train_few(seed):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (32, 28, 28, 1)).astype("float32")
    y = np.arange(32) % 2
    model = gan.make_gan(latent_dim=8, n_classes=2, width=4, seed=seed)
    before = [np.array(w) for w in model.generator.get_weights()]
    d_before = [np.array(w) for w in model.discriminator.get_weights()]
    steps = gan.StepHistory()
    hist = model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, callbacks=[steps])
    assert len(steps.d) == len(steps.g) == 4  # one entry per step (32 images / batch 8)
    assert np.isclose(np.mean(steps.d), hist.history["d_loss"][0], rtol=1e-4)  # epoch mean = mean of the steps
    return model, before, d_before, hist.history


def test_train_steps_change_weights_and_are_deterministic():
    m1, g0, d0, h1 = _train_few(3)
    changed_g = any(not np.allclose(a, b) for a, b in zip(g0, m1.generator.get_weights()))
    changed_d = any(not np.allclose(a, b) for a, b in zip(d0, m1.discriminator.get_weights()))
    assert changed_g and changed_d
    m2, _, _, h2 = _train_few(3)
    for a, b in zip(m1.generator.get_weights(), m2.generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2
    assert np.isfinite(h1["d_loss"][0]) and np.isfinite(h1["g_loss"][0])


def test_conditional_gan_needs_labels_and_sample_checks_labels():
    g = gan.build_generator(8, n_classes=2, width=4)
    with pytest.raises(ValueError, match="labels"):
        gan.sample(g, 4, 8, n_classes=2)
    with pytest.raises(ValueError, match="labels has 3"):
        gan.sample(g, 4, 8, labels=[0, 1, 0], n_classes=2)
    out = gan.sample(g, 4, 8, labels=[0, 1, 0, 1], n_classes=2, seed=5)
    assert out.shape == (4, 28, 28, 1) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, gan.sample(g, 4, 8, labels=[0, 1, 0, 1], n_classes=2, seed=5))


def test_make_gan_validates_learning_rates():
    with pytest.raises(ValueError, match="d_lr"):
        gan.make_gan(d_lr=0.0)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def test_frechet_distance_identical_is_zero_and_shift_is_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 8))
    assert gan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 0, 0, 3.0])
    # same covariance, shifted mean: FD = ||μ1 − μ2||² exactly
    assert gan.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_scaled_gaussian_closed_form():
    # N(0, I) vs N(0, s² I) in d dims: FD = d (1 − s)²; from samples, approximately
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20000, 4)), 2.0 * rng.standard_normal((20000, 4))
    assert gan.frechet_distance(a, b) == pytest.approx(4 * (1 - 2.0) ** 2, rel=0.05)
    assert gan.frechet_distance(a, b) >= 0.0


def test_frechet_distance_handles_singular_covariances_and_bad_input():
    rng = np.random.default_rng(2)
    a = np.c_[rng.standard_normal((100, 3)), np.zeros((100, 2))]  # rank-deficient
    fd = gan.frechet_distance(a, a + 0.1)
    assert np.isfinite(fd) and fd == pytest.approx(5 * 0.01, rel=1e-3, abs=1e-3)
    with pytest.raises(ValueError, match="same number of columns"):
        gan.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 5))
    assert gan.precision_recall(a, a, k=3) == (1.0, 1.0)
    assert gan.precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)
    # a generator that covers only half of the real data: high precision, recall about one half
    half = a[a[:, 0] > 0]
    p, r = gan.precision_recall(a, half, k=3)
    assert p == 1.0 and 0.3 < r < 0.7


def test_knn_radii_and_nearest_distances():
    pts = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(gan.knn_radii(pts, 1), [1, 1, 2, 4])
    np.testing.assert_allclose(gan.knn_radii(pts, 2), [3, 2, 3, 6])
    with pytest.raises(ValueError, match="k must be"):
        gan.knn_radii(pts, 4)
    d, i = gan.nearest_distances(np.array([[0.9], [6.0]]), pts)
    np.testing.assert_allclose(d, [0.1, 1.0])
    np.testing.assert_array_equal(i, [1, 3])
    imgs = np.random.default_rng(0).random((5, 28, 28, 1))
    d, i = gan.nearest_distances(imgs[[3, 1]], imgs)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)
    np.testing.assert_array_equal(i, [3, 1])


def test_diversity_and_baselines():
    assert gan.mean_pairwise_distance(np.array([[0.0, 0], [3, 4]])) == pytest.approx(5.0)
    assert gan.mean_pairwise_distance(np.ones((10, 4))) == pytest.approx(0.0, abs=1e-6)
    x = np.random.default_rng(0).random((50, 28, 28, 1)).astype("float32")
    g = gan.gaussian_baseline(x, 7, seed=1)
    assert g.shape == (7, 28, 28, 1) and g.min() >= 0 and g.max() <= 1
    t = gan.to_tanh_range(np.array([[[0, 255]]], dtype=np.uint8))
    np.testing.assert_allclose(t[..., 0], [[[-1.0, 1.0]]])
    np.testing.assert_allclose(gan.to_unit_range(t), [[[[0.0], [1.0]]]])


def test_sqrtm_real_drops_round_off_and_warns_on_a_large_imaginary_part():
    import warnings as _w

    m = np.array([[4.0, 1.0], [1.0, 3.0]])
    with _w.catch_warnings():
        _w.simplefilter("error", gan.FrechetWarning)  # no warning for a well-behaved matrix
        root = gan.sqrtm_real(m)
    np.testing.assert_allclose(root @ root, m, atol=1e-10)
    assert not np.iscomplexobj(root)
    with pytest.warns(gan.FrechetWarning, match="imaginary part"):
        root = gan.sqrtm_real(np.diag([-1.0, 4.0]))  # sqrt(-1) = i: not round-off
    np.testing.assert_allclose(root, np.diag([0.0, 2.0]), atol=1e-12)


def test_frechet_distance_warns_when_the_square_root_is_complex(monkeypatch):
    from scipy import linalg

    real_sqrtm = linalg.sqrtm
    monkeypatch.setattr(linalg, "sqrtm", lambda m, *a, **kw: real_sqrtm(m) + 0.5j * np.ones_like(m))
    a = np.random.default_rng(0).standard_normal((200, 3))
    with pytest.warns(gan.FrechetWarning):
        fd = gan.frechet_distance(a, a + 1.0)
    assert fd == pytest.approx(3.0, rel=1e-6)  # the real part is kept


def test_frechet_distance_equals_the_eigenvalue_form():
    # tr (Σa Σb)^{1/2} = Σ sqrt(λ_i(Σa Σb)): an independent computation of the same number
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((300, 6)), rng.standard_normal((250, 6)) @ rng.standard_normal((6, 6)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr = np.sqrt(np.clip(np.linalg.eigvals(ca @ cb).real, 0, None)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr
    assert gan.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_stratified_halves_are_disjoint_class_matched_and_seeded():
    y = np.r_[np.zeros(10, int), np.ones(15, int)]
    a, b = gan.stratified_halves(y, 4, seed=1)
    assert a.shape == (4, 12) and b.shape == (4, 13)
    for ia, ib in zip(a, b):
        assert set(ia).isdisjoint(ib) and len(set(ia) | set(ib)) == len(y)
        assert (y[ia] == 0).sum() == 5 and (y[ib] == 0).sum() == 5 and (y[ia] == 1).sum() == 7
    assert not np.array_equal(a[0], a[1])  # the draws differ ...
    np.testing.assert_array_equal(a, gan.stratified_halves(y, 4, seed=1)[0])  # ... and are seeded
    with pytest.raises(ValueError, match="at least 4"):
        gan.stratified_halves([0, 0, 1, 1, 1, 1], 2)


def test_matched_subset_copies_the_class_counts():
    rng = np.random.default_rng(0)
    pool = np.r_[np.zeros(20, int), np.ones(5, int)]
    pick = gan.matched_subset(pool, [1, 1, 0, 1, 0, 0, 0], rng)
    assert len(set(pick)) == 7 and (pool[pick] == 0).sum() == 4 and (pool[pick] == 1).sum() == 3
    with pytest.raises(ValueError, match="5 examples of class 1"):
        gan.matched_subset(pool, np.ones(6, int), rng)


def test_repeated_comparison_floor_candidates_and_paired_differences():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(100, int)]
    real = rng.standard_normal((160, 4)) + 3.0 * y[:, None]  # the classes differ
    same = rng.standard_normal((160, 4)) + 3.0 * y[:, None]  # a perfect "generator"
    far = rng.standard_normal((200, 4)) + 10.0  # a bad, unconditional one
    wrong_mix = np.r_[rng.standard_normal((100, 4)), rng.standard_normal((100, 4)) + 3.0]
    wrong_labels = np.r_[np.ones(100, int), np.zeros(100, int)]  # labels swapped: class-mismatched
    res = gan.repeated_comparison(
        real, y, {"same": (same, y), "far": (far, None), "swapped": (wrong_mix, wrong_labels)}, n_draws=8, seed=3
    )
    assert res.n_a == res.n_b == 80 and res.n_draws == 8
    assert res.fd[gan.FLOOR].shape == (8,)
    med, lo, hi = res.interval("fd", gan.FLOOR)
    assert lo <= med <= hi
    d_same = res.difference("fd", "same")
    assert d_same[1] <= 0.0 <= d_same[2]  # a perfect generator is not detectably above the floor
    d_far = res.difference("fd", "far")
    assert d_far[1] > 50  # far above the floor in every draw
    assert res.interval("precision", "far")[2] == 0.0 and res.interval("recall", "far")[2] == 0.0
    assert res.difference("fd", "swapped")[1] > 1.0  # a class-mismatched set is detected
    # the draws are seeded: the same call gives the same numbers
    again = gan.repeated_comparison(
        real, y, {"same": (same, y), "far": (far, None), "swapped": (wrong_mix, wrong_labels)}, n_draws=8, seed=3
    )
    np.testing.assert_array_equal(res.fd["far"], again.fd["far"])
    # the per-draw values agree with the one-shot functions on the same halves
    a, b = gan.stratified_halves(y, 8, seed=3)
    assert res.fd[gan.FLOOR][0] == pytest.approx(gan.frechet_distance(real[a[0]], real[b[0]]))
    assert (res.precision[gan.FLOOR][0], res.recall[gan.FLOOR][0]) == gan.precision_recall(real[b[0]], real[a[0]])
    # a candidate's values do not depend on the other candidates of the call (paired across calls)
    alone = gan.repeated_comparison(real, y, {"swapped": (wrong_mix, wrong_labels)}, n_draws=8, seed=3)
    np.testing.assert_array_equal(alone.fd["swapped"], res.fd["swapped"])
    np.testing.assert_array_equal(alone.fd[gan.FLOOR], res.fd[gan.FLOOR])
    with pytest.raises(ValueError, match="metric"):
        res.values("fid", "same")
    with pytest.raises(ValueError, match="name of the floor"):
        gan.repeated_comparison(real, y, {gan.FLOOR: (same, y)}, n_draws=2)
