"""Tests of utils.phantoms: exact, deterministic ground truth for synthetic lesions."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

from utils.phantoms import (
    boxes_from_mask,
    insert_nodules,
    make_classification_phantoms,
    make_lesion_phantoms,
    to_hu,
)

# the data mirror the session started with (tests/conftest.py unsets it for each test)
MIRROR = os.environ.get("MEDIMG_DATA_DIR")

KW = dict(size=96, n_lesions=(0, 3), radius=(2, 8), contrast=(0.15, 0.4), noise=0.03)


@pytest.fixture(scope="module")
def batch():
    return make_lesion_phantoms(24, seed=7, **KW)


def _ring(mask, width, exclude):
    """Pixels at distance (1, width] from ``mask`` and outside ``exclude``."""
    d = ndimage.distance_transform_edt(~mask)
    return (d > 1) & (d <= width) & ~exclude


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_batches(batch):
    again = make_lesion_phantoms(24, seed=7, **KW)
    assert again.images.tobytes() == batch.images.tobytes()
    np.testing.assert_array_equal(again.instances, batch.instances)
    np.testing.assert_array_equal(again.labels, batch.labels)
    for name in ("boxes", "centers", "radii", "axes", "angles", "contrasts"):
        _same(getattr(again, name), getattr(batch, name))


def test_different_seeds_differ(batch):
    other = make_lesion_phantoms(24, seed=8, **KW)
    assert not np.array_equal(other.images, batch.images)
    assert not np.array_equal(other.instances, batch.instances)
    assert all(not np.array_equal(a, b) for a, b in zip(other.images, batch.images))


def test_prefix_of_a_batch_equals_a_smaller_batch(batch):
    small = make_lesion_phantoms(5, seed=7, **KW)
    np.testing.assert_array_equal(small.images, batch.images[:5])
    np.testing.assert_array_equal(small.instances, batch.instances[:5])
    _same(small.boxes, batch.boxes[:5])


# ---------------------------------------------------------------------------
# shapes, masks, labels, boxes
# ---------------------------------------------------------------------------


def test_shapes_dtypes_and_ranges(batch):
    n = len(batch)
    assert n == 24
    assert batch.images.shape == batch.masks.shape == batch.instances.shape == batch.body.shape == (n, 96, 96)
    assert batch.images.dtype == np.float32 and batch.masks.dtype == np.uint8
    assert batch.instances.dtype == np.int32 and batch.labels.dtype == np.int64 and batch.labels.shape == (n,)
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    for i in range(n):
        k = batch.n_lesions[i]
        assert batch.boxes[i].shape == (k, 4) and batch.boxes[i].dtype == np.int64
        assert batch.centers[i].shape == (k, 2) and batch.axes[i].shape == (k, 2)
        assert batch.radii[i].shape == batch.angles[i].shape == batch.contrasts[i].shape == (k,)
        assert batch.sites[i].shape == (k,)
    assert batch.params["seed"] == 7 and batch.params["size"] == (96, 96)


def test_masks_are_binary_and_equal_instances_gt_0(batch):
    assert set(np.unique(batch.masks)) <= {0, 1}
    np.testing.assert_array_equal(batch.masks, (batch.instances > 0).astype(np.uint8))
    for i in range(len(batch)):
        labels = np.unique(batch.instances[i])
        np.testing.assert_array_equal(labels, np.arange(batch.n_lesions[i] + 1))


def test_labels_and_zero_lesion_images(batch):
    np.testing.assert_array_equal(batch.labels, (batch.n_lesions > 0).astype(np.int64))
    empty = batch.n_lesions == 0
    assert empty.any() and (~empty).any() and batch.n_lesions.max() == 3
    assert batch.masks[empty].sum() == 0 and batch.instances[empty].sum() == 0


def test_boxes_from_mask_recovers_the_boxes_exactly(batch):
    recovered = boxes_from_mask(batch.instances)
    assert isinstance(recovered, list) and len(recovered) == len(batch)
    for got, want in zip(recovered, batch.boxes):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_each_box_is_tight_half_open(batch):
    for i in range(len(batch)):
        for j, (x0, y0, x1, y1) in enumerate(batch.boxes[i], start=1):
            lesion = batch.instances[i] == j
            sub = lesion[y0:y1, x0:x1]
            assert sub.sum() == lesion.sum()  # everything inside the box
            assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()  # touches all sides
            cx, cy = batch.centers[i][j - 1]
            assert x0 <= cx < x1 and y0 <= cy < y1


def test_lesions_inside_body_apart_and_off_other_tissue(batch):
    for i in range(len(batch)):
        body = batch.body[i].astype(bool)
        depth = ndimage.distance_transform_edt(body)
        inst = batch.instances[i]
        k = batch.n_lesions[i]
        if k:
            assert depth[inst > 0].min() > batch.params["margin"]
        for j in range(1, k + 1):
            d = ndimage.distance_transform_edt(inst != j)
            others = (inst > 0) & (inst != j)
            if others.any():
                assert d[others].min() > batch.params["min_distance"]


def test_sites_name_the_tissue_under_each_lesion():
    b = make_lesion_phantoms(32, seed=5)  # the defaults: 128 x 128, radius 3..10
    t = b.lesion_table()
    sites = set(t["site"])
    assert sites <= {"soft tissue", "liver", "spleen", "kidney", "fat", "mixed"}
    assert {"soft tissue", "liver"} <= sites
    assert np.mean(t["site"] == "mixed") < 0.1  # lesions nearly always lie within one tissue
    flat = make_lesion_phantoms(4, size=64, n_lesions=2, radius=(2, 5), seed=0, structures=False)
    assert all((s == "soft tissue").all() for s in flat.sites)


def test_radius_range_is_respected():
    b = make_lesion_phantoms(16, size=128, n_lesions=(1, 3), radius=(1.5, 10), aspect=(1.0, 1.5), seed=3)
    t = b.lesion_table()
    assert len(t["radius"]) == b.n_lesions.sum() >= 16
    assert t["radius"].min() >= 1.5 and t["radius"].max() <= 10
    equivalent = np.sqrt(t["area"] / np.pi)  # radius of the disc of the same area
    np.testing.assert_allclose(equivalent, t["radius"], atol=0.35)
    np.testing.assert_allclose(t["a"] * t["b"], t["radius"] ** 2)
    assert (t["a"] >= t["b"]).all() and (t["a"] / t["b"] <= 1.5 + 1e-9).all()
    assert (np.diff(t["radius"])[np.diff(t["image"]) == 0] <= 0).all()  # label 1 = largest
    fixed = make_lesion_phantoms(4, size=64, n_lesions=2, radius=4, aspect=1, seed=0)
    assert all(np.all(r == 4.0) for r in fixed.radii)


@pytest.mark.parametrize("contrast", [(0.2, 0.3), (-0.3, -0.2)])
def test_contrast_against_surrounding_ring(contrast):
    b = make_lesion_phantoms(12, size=128, n_lesions=(1, 2), radius=(4, 8), contrast=contrast, noise=0.02, seed=2)
    errors = []
    for i in range(len(b)):
        inst = b.instances[i]
        for j, (c, site) in enumerate(zip(b.contrasts[i], b.sites[i]), start=1):
            if site in ("mixed", "fat"):  # no uniform surroundings (rare at this size)
                continue
            lesion = inst == j
            core = ndimage.binary_erosion(lesion)  # softness 1: full contrast one pixel in
            ring = _ring(lesion, b.params["margin"], inst > 0)
            measured = b.images[i][core].mean() - b.images[i][ring].mean()
            assert np.sign(measured) == np.sign(c)
            # tissue texture and noise make the local background vary: about 0.012 (s.d.) here
            assert abs(measured - c) < 0.05, (i, j, measured, c)
            errors.append(measured - c)
    assert len(errors) >= 12 and abs(np.mean(errors)) < 0.01  # unbiased


def test_lesion_changes_exactly_the_mask_pixels():
    """Same seed, contrast 0 vs 0.3: the images differ exactly on the masks (soft edges never leak)."""
    kw = dict(size=96, n_lesions=(1, 3), radius=(2, 7), noise=0.03, seed=11, softness=2.0)
    with_lesion = make_lesion_phantoms(8, contrast=0.3, **kw)
    without = make_lesion_phantoms(8, contrast=0.0, **kw)
    np.testing.assert_array_equal(with_lesion.instances, without.instances)
    diff = with_lesion.images - without.images
    mask = with_lesion.masks.astype(bool)
    assert np.all(diff[~mask] == 0)
    assert np.all(diff[mask] > 0.3 * 0.15)  # every mask pixel is raised, edge pixels by >= 0.3 * smoothstep(0.5 / 2)
    assert np.isclose(diff[mask].max(), 0.3, atol=1e-6)


def test_flat_phantom_has_exact_contrast():
    b = make_lesion_phantoms(
        4, size=64, n_lesions=1, radius=5, contrast=0.25, noise=0.0, seed=0, softness=0.0, texture=0.0, structures=False
    )
    for i in range(4):
        lesion = b.masks[i].astype(bool)
        ring = _ring(lesion, 3, lesion)
        tissue = b.images[i][ring]
        assert np.ptp(tissue) == 0  # flat background
        np.testing.assert_allclose(b.images[i][lesion], tissue[0] + 0.25, atol=1e-6)


def test_air_is_black_and_hu_mapping(batch):
    outside = ~ndimage.binary_dilation(batch.body.astype(bool), iterations=1)
    assert np.all(batch.images[outside] == 0)  # air (-1000 HU) saturates below the window
    np.testing.assert_allclose(to_hu(np.array([0.0, 0.5, 1.0], np.float32)), [-160, 40, 240])
    assert to_hu(batch.images[:1]).dtype == np.float32
    inner = ndimage.binary_erosion(batch.body[0].astype(bool), iterations=12)
    assert -100 < np.median(to_hu(batch.images[0][inner])) < 120  # soft tissue


def test_rician_noise_model_gives_a_noise_floor_in_air():
    b = make_lesion_phantoms(2, size=64, radius=(2, 5), noise=0.05, noise_model="rician", seed=0)
    air = ~ndimage.binary_dilation(b.body.astype(bool), iterations=1)
    assert 0.03 < b.images[air].mean() < 0.1  # Rayleigh mean = sigma * sqrt(pi / 2)
    assert 0 <= b.images.min() and b.images.max() <= 1


def test_non_square_size_and_lesion_table():
    b = make_lesion_phantoms(3, size=(80, 112), n_lesions=2, radius=(2, 5), seed=4)
    assert b.images.shape == (3, 80, 112)
    t = b.lesion_table()
    assert len(t["image"]) == 6
    np.testing.assert_array_equal(t["area"], [(b.instances[i] == j).sum() for i, j in zip(t["image"], t["label"])])
    np.testing.assert_array_equal(np.stack([t["x0"], t["y0"], t["x1"], t["y1"]], 1), np.concatenate(b.boxes))


def test_generates_fast():
    import time

    t = time.perf_counter()
    b = make_lesion_phantoms(64, seed=0)
    assert b.images.shape == (64, 128, 128)
    assert time.perf_counter() - t < 5.0  # about 0.3 s on one idle core; generous for loaded CI


# ---------------------------------------------------------------------------
# classification variant
# ---------------------------------------------------------------------------


def test_classification_phantoms_are_balanced_and_deterministic():
    b = make_classification_phantoms(20, size=64, positive_fraction=0.3, seed=1)
    assert b.labels.sum() == 6
    np.testing.assert_array_equal(b.labels, (b.n_lesions > 0).astype(np.int64))
    assert set(b.n_lesions) == {0, 1}
    again = make_classification_phantoms(20, size=64, positive_fraction=0.3, seed=1)
    assert again.images.tobytes() == b.images.tobytes()
    assert b.params["kind"] == "classification"
    with pytest.raises(ValueError, match="positive_fraction"):
        make_classification_phantoms(4, positive_fraction=1.5)
    with pytest.raises(ValueError, match="n_lesions"):
        make_classification_phantoms(4, n_lesions=0)


# ---------------------------------------------------------------------------
# inserting nodules into real images
# ---------------------------------------------------------------------------


def _check_insertion(hu, res, region):
    mask = res.mask.astype(bool)
    np.testing.assert_array_equal(mask, res.instances > 0)
    assert res.image.dtype == np.float32
    ref = hu.astype(np.float32)
    assert np.array_equal(res.image[~mask], ref[~mask])  # untouched, bit for bit
    raised = res.image[mask] - ref[mask]
    assert np.all(np.sign(raised) == np.sign(res.contrasts[0]))
    assert np.all(region[mask])
    np.testing.assert_array_equal(boxes_from_mask(res.instances), res.boxes)
    image, m, boxes = res  # unpacks as (image, mask, boxes)
    assert image is res.image and m is res.mask and boxes is res.boxes


def test_insert_nodules_into_a_synthetic_hu_slice():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:160, :200]
    body = ((xx - 100) / 85.0) ** 2 + ((yy - 80) / 65.0) ** 2 <= 1
    hu = np.where(body, 40 + rng.normal(0, 12, body.shape), -1000).round().astype(np.int16)
    res = insert_nodules(hu, 4, radius=(3, 8), contrast=(-80, -40), seed=3, region=body)
    assert len(res.boxes) == 4
    _check_insertion(hu, res, body)
    again = insert_nodules(hu, 4, radius=(3, 8), contrast=(-80, -40), seed=3, region=body)
    assert again.image.tobytes() == res.image.tobytes()
    assert not np.array_equal(insert_nodules(hu, 4, contrast=50, seed=4, region=body).mask, res.mask)
    assert insert_nodules(hu, 0, contrast=50).mask.sum() == 0


def test_insert_nodules_into_a_real_ct_slice():
    pydicom = pytest.importorskip("pydicom")
    from utils import data

    path = None
    # the conftest isolates the cache: look first, read-only (as a data directory), in the session's
    # mirror and in the repository's cache, so that no download is needed when the file is there
    for root in (MIRROR, data.DEFAULT_CACHE_DIR):
        if root and path is None:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(data.DATA_DIR_ENV, str(root))
                try:
                    path = data.locate("pydicom-data-samples", "693_UNCR.dcm", download_ok=False)
                except data.DataError:
                    pass
    if path is None:
        try:  # into the test's temporary cache, from the installed package or PyPI
            path = data.sample("pydicom-data-samples", "693_UNCR.dcm")
        except data.DataError as exc:
            pytest.skip(f"offline and the file is not cached: {exc}")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.shape == (512, 512)
    brain = ndimage.binary_opening((hu > 0) & (hu < 80), iterations=2)
    labels, _ = ndimage.label(brain)
    region = ndimage.binary_fill_holes(labels == np.bincount(labels.ravel())[1:].argmax() + 1)
    res = insert_nodules(hu, 5, radius=(4, 12), contrast=(30, 60), seed=0, region=region)
    assert len(res.boxes) == 5
    _check_insertion(hu, res, region)
    depth = ndimage.distance_transform_edt(region)
    assert depth[res.mask.astype(bool)].min() > 3  # margin inside the brain
    for j, c in enumerate(res.contrasts, start=1):
        lesion = res.instances == j
        core = ndimage.binary_erosion(lesion)
        np.testing.assert_allclose(res.image[core] - hu[core], c, rtol=1e-5)


# ---------------------------------------------------------------------------
# boxes_from_mask and argument errors
# ---------------------------------------------------------------------------


def test_boxes_from_mask_conventions():
    inst = np.zeros((6, 8), np.int32)
    inst[1:3, 2:5] = 1
    inst[4, 7] = 2
    np.testing.assert_array_equal(boxes_from_mask(inst), [[2, 1, 5, 3], [7, 4, 8, 5]])
    assert boxes_from_mask(np.zeros((4, 4), np.int32)).shape == (0, 4)
    gap = inst.copy()
    gap[gap == 1] = 3
    with pytest.raises(ValueError, match="without gaps"):
        boxes_from_mask(gap)
    with pytest.raises(TypeError, match="ndimage.label"):
        boxes_from_mask(inst.astype(float))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n=-1), ValueError, "n must be >= 0"),
        (dict(n=2.5), TypeError, "n must be an integer"),
        (dict(radius=(10, 3)), ValueError, r"reversed.*\(3, 10\)"),
        (dict(radius=0.5), ValueError, "radius"),
        (dict(radius=40), ValueError, "too large"),
        (dict(contrast=(0.4, 0.1)), ValueError, "contrast.*reversed"),
        (dict(contrast=2.0), ValueError, "contrast"),
        (dict(n_lesions=(-1, 2)), ValueError, "n_lesions"),
        (dict(n_lesions=(0, 1.5)), ValueError, "n_lesions must hold integers"),
        (dict(noise=-0.1), ValueError, "noise"),
        (dict(softness=-1), ValueError, "softness"),
        (dict(aspect=0.5), ValueError, "aspect"),
        (dict(size=8), ValueError, "size"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(noise_model="poisson"), ValueError, "noise_model"),
        (dict(n_lesions=3, radius=11, aspect=1), ValueError, "could not place"),
    ],
)
def test_argument_errors(kwargs, error, match):
    args = dict(n=2, size=64, radius=(2, 5))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        make_lesion_phantoms(**args)


def test_insert_nodules_argument_errors():
    img = np.zeros((64, 64), np.int16)
    with pytest.raises(TypeError, match="contrast is required"):
        insert_nodules(img, 1)
    with pytest.raises(ValueError, match="2-D"):
        insert_nodules(np.zeros((2, 64, 64)), 1, contrast=10)
    with pytest.raises(ValueError, match="region must have the image's shape"):
        insert_nodules(img, 1, contrast=10, region=np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="could not place"):
        insert_nodules(img, 2, radius=5, contrast=10, region=np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="too large"):
        insert_nodules(img, 1, radius=30, contrast=10)
