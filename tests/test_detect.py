"""utils.detect: box encoding/decoding, losses, FROC, COCO mAP, blob baseline, a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from utils import course, detect, phantoms, stats


@pytest.fixture(scope="module")
def keras():
    course.setup("fast", 0, fast={}, full={})  # deterministic ops, seeded
    import keras

    return keras


def _sorted(b):
    b = np.asarray(b, float).reshape(-1, 4)
    return b[np.lexsort(b.T[::-1])]


# ---------------------------------------------------------------------------
# boxes, targets, decoding
# ---------------------------------------------------------------------------


def test_box_iou_matches_pycocotools_and_hand_values():
    from pycocotools import mask as coco_mask

    a = np.array([[0, 0, 10, 10], [2, 3, 9, 8], [0, 0, 4, 4]])
    b = np.array([[5, 5, 15, 15], [2, 3, 9, 8], [6, 6, 9, 9]])
    ours = detect.box_iou(a, b)

    def xywh(x):
        return [[float(v[0]), float(v[1]), float(v[2] - v[0]), float(v[3] - v[1])] for v in x]

    ref = coco_mask.iou(xywh(a), xywh(b), [0] * len(b))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert ours[0, 0] == pytest.approx(25 / 175)
    assert ours[1, 1] == 1.0 and ours[2, 2] == 0.0


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_encode_decode_round_trip_recovers_the_boxes(keras, stride):
    batch = phantoms.make_lesion_phantoms(6, size=64, n_lesions=(0, 3), radius=(2, 6), min_distance=6, seed=3)
    target = detect.encode_targets(batch.boxes, (64, 64), stride)
    assert target.shape == (6, 64 // stride, 64 // stride, 5)
    boxes, scores = detect.decode(target, stride, score_min=0.5)
    boxes_np, _ = detect.decode_numpy(target, stride, score_min=0.5)
    for gt, got, got_np, s in zip(batch.boxes, boxes, boxes_np, scores):
        np.testing.assert_allclose(_sorted(got), _sorted(gt), atol=1e-4)
        np.testing.assert_allclose(_sorted(got_np), _sorted(gt), atol=1e-4)
        assert np.all(s == 1.0)


def test_heatmap_is_one_exactly_at_object_cells_and_offsets_are_bounded():
    boxes = [np.array([[13, 20, 24, 27]])]
    t = detect.encode_targets(boxes, (64, 64), 4)[0]
    i, j = np.argwhere(t[..., 0] == 1.0)[0]
    assert (i, j) == (5, 4)  # centre (18, 23) -> u = (4.125, 5.375)
    np.testing.assert_allclose(t[i, j, 1:], [2.75, 1.75, 0.125, 0.375])
    assert (t[..., 0] == 1.0).sum() == 1 and t[..., 0].max() == 1.0


def test_encode_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible by stride"):
        detect.encode_targets([np.zeros((0, 4))], (30, 30), 4)
    with pytest.raises(ValueError, match="stride"):
        detect.encode_targets([np.zeros((0, 4))], (32, 32), 0)
    with pytest.raises(ValueError, match="x1 < x0"):
        detect.encode_targets([np.array([[5, 5, 2, 9]])], (32, 32), 2)


def test_augment_d4_transforms_boxes_like_the_masks():
    batch = phantoms.make_lesion_phantoms(3, size=64, n_lesions=2, radius=(2, 4), aspect=(1.0, 2.0), seed=1)
    xa, ba = detect.augment_d4(batch.instances[..., None], batch.boxes)
    assert len(xa) == len(ba) == 24
    for inst, boxes in zip(xa[..., 0], ba):
        ref = phantoms.boxes_from_mask(np.ascontiguousarray(inst))
        np.testing.assert_array_equal(_sorted(ref), _sorted(boxes))


def test_assign_to_cells_and_boxes_of_instances():
    inst = np.zeros((8, 16), np.int32)
    inst[1:3, 1:4] = 5
    inst[4:7, 10:15] = 2
    boxes = detect.boxes_of_instances(inst)
    np.testing.assert_array_equal(_sorted(boxes), _sorted([[1, 1, 4, 3], [10, 4, 15, 7]]))
    assert len(detect.boxes_of_instances(inst, min_area=7)) == 1
    cells = np.array([[0, 0, 8, 8], [0, 8, 8, 16]])
    per_cell, scores = detect.assign_to_cells(boxes, cells, scores=[0.1, 0.9])
    assert [len(b) for b in per_cell] == [1, 1]
    np.testing.assert_array_equal(per_cell[1], [[2, 4, 7, 7]])  # shifted into the cell


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


def test_focal_loss_equals_keras_binary_focal_crossentropy(keras):
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) > 0.8).astype("float32")
    p = rng.uniform(0.001, 0.999, (3, 8, 8, 1)).astype("float32")
    for gamma in (0.0, 2.0, 3.0):
        ref = keras.losses.BinaryFocalCrossentropy(gamma=gamma)(y, p)
        assert float(detect.focal_loss(y, p, gamma=gamma)) == pytest.approx(float(ref), rel=1e-5)
    ref = keras.losses.BinaryFocalCrossentropy(gamma=2.0, alpha=0.25, apply_class_balancing=True)(y, p)
    assert float(detect.focal_loss(y, p, gamma=2.0, alpha=0.25)) == pytest.approx(float(ref), rel=1e-5)


def test_centernet_focal_loss_with_beta_zero_is_the_focal_loss_normalised_by_objects(keras):
    rng = np.random.default_rng(1)
    y = (rng.random((2, 16, 16)) > 0.95).astype("float32")
    p = rng.uniform(0.01, 0.99, (2, 16, 16)).astype("float32")
    cn = float(detect.centernet_focal_loss(y, p, alpha=2.0, beta=0.0))
    fl = float(detect.focal_loss(y, p, gamma=2.0))
    assert cn * y.sum() / y.size == pytest.approx(fl, rel=1e-5)
    # the Gaussian target lowers the penalty of high scores near a centre
    t = detect.encode_targets([np.array([[10, 10, 22, 22]])], (32, 32), 2)[..., 0]
    high = np.full_like(t, 0.01)
    high[t > 0.3] = 0.9
    assert float(detect.centernet_focal_loss(t, high, beta=4.0)) < float(detect.centernet_focal_loss(t, high, beta=0.0))


# ---------------------------------------------------------------------------
# FROC and COCO
# ---------------------------------------------------------------------------


def test_froc_on_a_hand_made_case():
    # image 1: lesions A (centre 10,10) and B (40,40); image 2: lesion C (20,20)
    gt = [np.array([[5, 5, 16, 16], [35, 35, 46, 46]]), np.array([[15, 15, 26, 26]])]
    det = [
        np.array([[5, 5, 16, 16], [6, 6, 17, 17], [50, 0, 60, 10], [36, 35, 47, 46], [0, 50, 5, 55]]),
        np.array([[15, 15, 26, 26], [0, 0, 6, 6]]),
    ]
    scores = [np.array([0.9, 0.95, 0.8, 0.4, 0.3]), np.array([0.7, 0.6])]
    # A is hit at 0.95 (the 0.9 duplicate is ignored), B at 0.4, C at 0.7; FPs 0.8, 0.3 (image 1), 0.6 (image 2)
    gs, fps = detect.match_detections(gt[0], det[0], scores[0])
    np.testing.assert_allclose(gs, [0.95, 0.4])
    np.testing.assert_allclose(np.sort(fps), [0.3, 0.8])
    f = detect.froc(gt, det, scores)
    # thresholds 0.95 (1/3, 0 FP) 0.8 (1/3, .5) 0.7 (2/3, .5) 0.6 (2/3, 1) 0.4 (1, 1) 0.3 (1, 1.5)
    np.testing.assert_allclose(f.sens_at, [1 / 3, 1 / 3, 2 / 3, 1, 1, 1, 1])
    assert f.mean_sensitivity == pytest.approx((2 / 3 + 2 / 3 + 4) / 7)
    assert detect.threshold_at_fp_rate(f, 1.0) == pytest.approx(0.4)
    assert detect.threshold_at_fp_rate(f, 0.25) == pytest.approx(0.95)


def test_froc_of_perfect_and_empty_detectors_and_errors():
    gt = [np.array([[0, 0, 4, 4]]), np.zeros((0, 4))]
    assert detect.froc(gt, gt, [[1.0], []]).mean_sensitivity == 1.0
    assert detect.froc(gt, [np.zeros((0, 4))] * 2, [[], []]).mean_sensitivity == 0.0
    with pytest.raises(ValueError, match="one entry per image"):
        detect.froc(gt, gt[:1], [[1.0]])
    with pytest.raises(ValueError, match="at least one lesion"):
        detect.froc([np.zeros((0, 4))], [np.zeros((0, 4))], [[]])


def test_coco_map_perfect_is_one_shifted_is_lower_and_nothing_printed(capsys):
    batch = phantoms.make_lesion_phantoms(10, size=64, n_lesions=(1, 3), radius=(3, 6), seed=2)
    ones = [np.ones(len(b)) for b in batch.boxes]
    perfect = detect.coco_map(batch.boxes, batch.boxes, ones)
    assert perfect == {"ap50": pytest.approx(1.0), "ap": pytest.approx(1.0)}
    shifted = detect.coco_map(batch.boxes, [b + np.array([2, 1, 2, 1]) for b in batch.boxes], ones)
    assert shifted["ap"] < 0.9 and shifted["ap50"] <= 1.0 and shifted["ap"] < shifted["ap50"]
    far = detect.coco_map(batch.boxes, [b + 30 for b in batch.boxes], ones)
    assert far["ap50"] < 0.2
    assert detect.coco_map(batch.boxes, [np.zeros((0, 4))] * 10, [np.zeros(0)] * 10) == {"ap50": 0.0, "ap": 0.0}
    assert capsys.readouterr().out == ""


def test_bootstrap_ci_brackets_the_point_estimate():
    batch = phantoms.make_lesion_phantoms(12, size=64, n_lesions=(1, 2), radius=(3, 5), seed=4)
    rng = np.random.default_rng(0)
    det = [b + rng.integers(-2, 3, b.shape) for b in batch.boxes]
    scores = [rng.random(len(b)) for b in batch.boxes]
    point, lo, hi = detect.bootstrap_detection_ci(
        lambda g, d, s: detect.froc(g, d, s).mean_sensitivity, batch.boxes, det, scores, n_boot=50, seed=0
    )
    assert lo <= point <= hi
    again = detect.bootstrap_detection_ci(
        lambda g, d, s: detect.froc(g, d, s).mean_sensitivity, batch.boxes, det, scores, n_boot=50, seed=0
    )
    assert again == (point, lo, hi)


# ---------------------------------------------------------------------------
# baseline and model
# ---------------------------------------------------------------------------


def test_blob_detect_finds_bright_discs_with_the_right_size():
    yy, xx = np.mgrid[:64, :64]
    img = np.zeros((64, 64))
    centres = [(16, 16, 4), (45, 40, 6)]
    for cy, cx, r in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    boxes, scores = detect.blob_detect(img, min_sigma=2, max_sigma=6, num_sigma=9, threshold=0.05)
    assert len(boxes) >= 2
    top = boxes[np.argsort(-scores)[:2]]
    got = detect.box_centers(top)
    got = got[np.argsort(got[:, 0])]
    np.testing.assert_allclose(got, [[16, 16], [40, 45]], atol=1.0)
    widths = np.sort(top[:, 2] - top[:, 0])
    assert 6 <= widths[0] <= 12 and 9 <= widths[1] <= 17


def test_centernet_shapes_and_a_tiny_training_run_learns(keras):
    model = detect.build_centernet((32, 32, 1), base_filters=4, depth=2, stride=2)
    assert model.output_shape == (None, 16, 16, 5)
    with pytest.raises(ValueError, match="power of 2"):
        detect.build_centernet((32, 32, 1), depth=2, stride=3)
    batch = phantoms.make_lesion_phantoms(
        48, size=32, n_lesions=1, radius=3, contrast=0.5, structures=False, texture=0.0, seed=0
    )
    x = batch.images[..., None]
    t = detect.encode_targets(batch.boxes, (32, 32), 2)
    loss = detect.centernet_loss()
    before = float(loss(t, model.predict(x, verbose=0)))
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    model.fit(x, t, epochs=15, batch_size=16, verbose=0)
    after = float(loss(t, model.predict(x, verbose=0)))
    assert after < 0.5 * before
    boxes, scores = detect.decode(model.predict(x, verbose=0), 2, score_min=0.01)
    assert detect.froc(batch.boxes, boxes, scores).mean_sensitivity > 0.5


def test_tune_blob_matches_a_direct_run_of_the_chosen_parameters():
    batch = phantoms.make_lesion_phantoms(6, size=64, n_lesions=(1, 2), radius=(3, 5), contrast=0.4, seed=5)
    best, table = detect.tune_blob(
        batch.images, batch.boxes, dict(min_sigma=[1.5], max_sigma=[4.0], box_scale=[0.7, 1.0, 1.4])
    )
    assert len(table) == 3 and best["box_scale"] in (0.7, 1.0, 1.4)
    params, cpm, ap50 = next(row for row in table if row[0] == best)
    dets = [detect.blob_detect(im, **best) for im in batch.images]
    assert detect.coco_map(batch.boxes, [d[0] for d in dets], [d[1] for d in dets])["ap50"] == pytest.approx(ap50)
    assert detect.froc(batch.boxes, [d[0] for d in dets], [d[1] for d in dets]).mean_sensitivity == pytest.approx(cpm)


def test_split_region_keeps_a_border_lesion_with_its_detection():
    cells = np.array([[0, 0, 32, 32], [0, 32, 32, 64]])
    gt = np.array([[26, 10, 37, 21], [40, 2, 46, 8]])  # centres (31, 15) in cell 0 and (42.5, 4.5) in cell 1
    det = np.array(
        [
            [27, 10, 38, 21],  # centre (32, 15): in cell 1 by its centre, but it hits lesion 0
            [5, 5, 9, 9],  # a false positive in cell 0
            [50, 20, 54, 24],
        ]
    )  # a false positive in cell 1
    gts, dets, scores = detect.split_region(gt, det, [0.9, 0.5, 0.4], cells)
    assert [len(g) for g in gts] == [1, 1] and [len(d) for d in dets] == [2, 1]
    np.testing.assert_allclose(sorted(scores[0]), [0.5, 0.9])
    np.testing.assert_array_equal(gts[1], [[8, 2, 14, 8]])  # shifted into cell 1
    f = detect.froc(gts, dets, scores)
    assert f.sens_at[-1] == 0.5  # lesion 0 found, lesion 1 missed; not a miss plus a false positive
    naive = detect.froc(detect.assign_to_cells(gt, cells), *detect.assign_to_cells(det, cells, [0.9, 0.5, 0.4]))
    assert naive.sens_at[-1] == 0.0


def test_coco_map_equals_cocoeval_summarize():
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    batch = phantoms.make_lesion_phantoms(8, size=64, n_lesions=(0, 3), radius=(2, 6), seed=6)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (len(batch), 3, 2))
    det = [
        np.concatenate([b + rng.normal(0, 1.0, b.shape), np.concatenate([p, p + 6], axis=1)])
        for b, p in zip(batch.boxes, xy)
    ]
    scores = [rng.random(len(d)) for d in det]
    gt, results = detect.to_coco(batch.boxes, det, scores)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = detect.coco_map(batch.boxes, det, scores)
    assert ours["ap"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert ours["ap50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert detect.coco_map(batch.boxes, det, scores, all_areas=True) == ours


def test_box_nms_on_a_hand_computed_case():
    # A = (0,0,10,10) 0.9; B = (1,1,11,11) 0.8, IoU(A, B) = 81/119 = 0.68; C = (20,20,30,30) 0.7, disjoint;
    # D = (5,0,15,10) 0.85, IoU(A, D) = 50/150 = 1/3.  Score order A, D, B, C.
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [5, 0, 15, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.85])
    assert np.isclose(detect.box_iou(boxes[:1], boxes[1:2])[0, 0], 81 / 119)
    assert np.isclose(detect.box_iou(boxes[:1], boxes[3:4])[0, 0], 1 / 3)
    # at 0.5: A kept, D kept (1/3 <= 0.5), B dropped (0.68 with A), C kept
    np.testing.assert_array_equal(detect.box_nms(boxes, scores, 0.5), [0, 3, 2])
    # at 0.3: D is dropped too (1/3 > 0.3)
    np.testing.assert_array_equal(detect.box_nms(boxes, scores, 0.3), [0, 2])
    # at 1.0 nothing is suppressed (no IoU is above 1): all, by decreasing score
    np.testing.assert_array_equal(detect.box_nms(boxes, scores, 1.0), [0, 3, 1, 2])
    # max_keep gives the first boxes of the full run
    np.testing.assert_array_equal(detect.box_nms(boxes, scores, 0.5, max_keep=2), [0, 3])
    assert detect.box_nms(np.zeros((0, 4)), np.zeros(0)).size == 0
    with pytest.raises(ValueError):
        detect.box_nms(boxes, scores[:2])
    with pytest.raises(ValueError):
        detect.box_nms(boxes, scores, 1.5)


def test_decode_nms_removes_the_shifted_duplicate_that_peak_extraction_also_removes(keras):
    r = 2
    out = np.zeros((1, 16, 16, 5), np.float32)
    out[0, 5, 5] = [1.0, 4.0, 4.0, 0.0, 0.0]  # an 8x8 box centred at pixel (10.5, 10.5)
    out[0, 5, 6] = [0.8, 4.0, 4.0, 0.0, 0.0]  # its neighbour: the same box shifted by R = 2 px (IoU 0.6)
    out[0, 12, 12] = [0.6, 3.0, 3.0, 0.25, 0.0]  # a second object far away
    b_nms, s_nms = detect.decode_nms(out, r, score_min=0.5, iou_threshold=0.5)
    b_peak, s_peak = detect.decode(out, r, score_min=0.5)
    np.testing.assert_allclose(s_nms[0], [1.0, 0.6], rtol=1e-6)
    np.testing.assert_allclose(b_nms[0], b_peak[0], atol=1e-6)
    np.testing.assert_allclose(s_nms[0], s_peak[0], atol=1e-6)
    # with a threshold above their IoU the duplicate survives box NMS
    b_keep, _ = detect.decode_nms(out, r, score_min=0.5, iou_threshold=0.7)
    assert len(b_keep[0]) == 3
    # top_k keeps the best
    b1, s1 = detect.decode_nms(out, r, top_k=1, score_min=0.5)
    assert len(b1[0]) == 1 and np.isclose(s1[0][0], 1.0)


# ---------------------------------------------------------------------------
# evaluating detectors, with the bootstrap replicates kept for pairing (chapter 4, sections 4-6)
# ---------------------------------------------------------------------------


def _noisy_detections(boxes, seed, n_fp=2, size=64):
    # every lesion found with a jittered box, plus n_fp random false positives per image; random scores
    rng = np.random.default_rng(seed)
    det, scores = [], []
    for b in boxes:
        xy = rng.uniform(0, size - 8, (n_fp, 2))
        fp = np.concatenate([xy, xy + 6], axis=1)
        d = np.concatenate([np.asarray(b, float).reshape(-1, 4) + rng.uniform(-1, 1, (len(b), 4)), fp])
        det.append(d)
        scores.append(rng.random(len(d)))
    return det, scores


@pytest.fixture(scope="module")
def small_test_set():
    batch = phantoms.make_lesion_phantoms(10, size=64, n_lesions=(0, 2), radius=(3, 5), seed=7)
    return batch.boxes, {"good": _noisy_detections(batch.boxes, 1, n_fp=1), "worse": _noisy_detections(batch.boxes, 2)}


def test_froc_metrics_with_and_without_the_cache_equal_froc(small_test_set):
    gt, dets = small_test_set
    det, scores = dets["worse"]
    f = detect.froc(gt, det, scores)
    expected = {"cpm": f.mean_sensitivity, "sens1": float(f.sens_at[detect.FP_RATES.index(1.0)])}
    assert detect.froc_metrics(gt, det, scores) == expected
    cache = {}
    idx = [0, 0, 3, 5, 5, 5, 9]  # a resample repeats images: each is matched once
    g, d, s = ([x[i] for i in idx] for x in (gt, det, scores))
    first = detect.froc_metrics(g, d, s, cache)
    assert len(cache) == len(set(idx))
    assert first == detect.froc_metrics(g, d, s) == detect.froc_metrics(g, d, s, cache)
    assert first == {
        "cpm": detect.froc(g, d, s).mean_sensitivity,
        "sens1": float(detect.froc(g, d, s).sens_at[3]),
    }


def test_bootstrap_replicates_reproduce_the_interval_and_pair_two_detectors(small_test_set):
    gt, dets = small_test_set
    runs = {
        name: detect.bootstrap_replicates(detect.coco_map, "ap50", gt, *d, n_boot=30, seed=3)
        for name, d in dets.items()
    }
    ci, point, reps, drawn = runs["good"]
    assert ci == detect.bootstrap_detection_ci(
        lambda g, d, s: detect.coco_map(g, d, s)["ap50"], gt, *dets["good"], n_boot=30, seed=3
    )
    assert point == detect.coco_map(gt, *dets["good"])
    assert set(reps) == {"ap50", "ap"} and len(reps["ap50"]) == len(drawn) <= 30
    assert stats.percentile_interval(point["ap50"], reps["ap50"]) == ci
    assert runs["worse"][3] == drawn  # the same seed draws the same resamples for the other detector
    other_seed = detect.bootstrap_replicates(detect.coco_map, "ap50", gt, *dets["good"], n_boot=30, seed=4)
    assert other_seed[3] != drawn


def test_evaluate_detectors_intervals_replicates_and_pairing(small_test_set):
    gt, dets = small_test_set
    res = detect.evaluate_detectors(gt, dets, n_boot=25, seed=0)
    assert list(res) == ["good", "worse"]
    for name, r in res.items():
        f = detect.froc(gt, *dets[name])
        assert r["froc"].mean_sensitivity == f.mean_sensitivity
        assert r["ci"]["cpm"] == pytest.approx(r["cpm"], abs=1e-12) and r["cpm"][0] == f.mean_sensitivity
        assert r["ap50"][0] == detect.coco_map(gt, *dets[name])["ap50"] and r["ap"] == r["ci"]["ap"][0]
        assert set(r["ci"]) == set(r["reps"]) == set(detect.METRICS)
        for m, (est, lo, hi) in r["ci"].items():
            assert (est, lo, hi) == stats.percentile_interval(est, r["reps"][m])
    assert res["good"]["drawn"] == res["worse"]["drawn"]
    # evaluating one detector alone gives the same numbers (the cache and the other detector change nothing)
    alone = detect.evaluate_detectors(gt, {"worse": dets["worse"]}, n_boot=25, seed=0)["worse"]
    assert alone["ci"] == res["worse"]["ci"] and alone["drawn"] == res["worse"]["drawn"]
    perfect = detect.evaluate_detectors(gt, {"p": (gt, [np.ones(len(b)) for b in gt])}, n_boot=10, seed=0)["p"]
    assert perfect["ci"]["cpm"] == (1.0, 1.0, 1.0) and perfect["ci"]["ap50"] == (1.0, 1.0, 1.0)
    header, rows = detect.results_table(res)
    assert len(header) == len(rows[0]) == 1 + len(detect.FP_RATES) + 3 and [r[0] for r in rows] == ["good", "worse"]


def test_point_metrics_are_froc_and_coco_map(small_test_set):
    gt, dets = small_test_set
    out = detect.point_metrics(gt, dets)
    for name, (det, scores) in dets.items():
        f = detect.froc(gt, det, scores)
        assert out[name]["cpm"] == f.mean_sensitivity and out[name]["sens1"] == f.sens_at[3]
        assert {k: out[name][k] for k in ("ap50", "ap")} == detect.coco_map(gt, det, scores)
        np.testing.assert_array_equal(out[name]["froc"].thresholds, f.thresholds)


def test_keep_top_and_blob_images():
    boxes = np.arange(20, dtype=float).reshape(5, 4)
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    b, s = detect.keep_top(boxes, scores, 3)
    np.testing.assert_array_equal(s, [0.9, 0.9, 0.5])
    np.testing.assert_array_equal(b, boxes[[1, 3, 2]])  # ties keep their order
    assert len(detect.keep_top(boxes, scores, 10)[0]) == 5
    batch = phantoms.make_lesion_phantoms(3, size=64, n_lesions=(1, 2), radius=(3, 5), seed=2)
    params = dict(min_sigma=1.5, max_sigma=4.5, threshold=0.02)
    bb, ss = detect.blob_images(batch.images[..., None], params, top_k=4)
    assert len(bb) == len(ss) == 3
    for im, b, s in zip(batch.images, bb, ss):
        ref = detect.keep_top(*detect.blob_detect(im, **params), 4)
        np.testing.assert_array_equal(b, ref[0])
        np.testing.assert_array_equal(s, ref[1])
        assert len(s) <= 4 and np.all(np.diff(s) <= 0)


def test_detect_images_decodes_the_model_outputs(keras):
    boxes = [np.array([[10, 12, 21, 21], [40, 30, 47, 38]], float), np.array([[5, 5, 12, 12]], float)]
    target = detect.encode_targets(boxes, (64, 64), 2)

    class Model:  # stands in for a trained CenterNet: predicts the exact targets
        def predict(self, x, batch_size, verbose):
            assert x.dtype == np.float32 and batch_size == 16 and verbose == 0
            return target

    got_boxes, got_scores = detect.detect_images(Model(), np.zeros((2, 64, 64, 1)), 2, top_k=20)
    want_boxes, want_scores = detect.decode(target, 2, top_k=20, score_min=0.01)
    for got, want, gs, ws, gt in zip(got_boxes, want_boxes, got_scores, want_scores, boxes):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(gs, ws)
        np.testing.assert_allclose(_sorted(got), _sorted(gt), atol=1e-5)  # exact targets decode to the boxes


def test_detection_counts_and_outcome_on_a_hand_made_image():
    gt = np.array([[0, 0, 10, 10], [30, 30, 40, 40]], float)
    det = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 56, 56], [30, 30, 40, 40]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.3])
    # at 0.5: three detections, the second a duplicate of lesion 0, one false positive, lesion 1 missed
    assert detect.detection_counts([gt, gt], [det, det[:1]], [scores, scores[:1]], 0.5) == (2.0, 0.5)
    hits, misses, fps = detect.outcome(gt, det, scores, 0.5)
    np.testing.assert_array_equal(hits, gt[:1])
    np.testing.assert_array_equal(misses, gt[1:])
    np.testing.assert_array_equal(fps, det[2:3])
    hits, misses, fps = detect.outcome(gt, det, scores, 0.0)
    assert len(hits) == 2 and len(misses) == 0 and len(fps) == 1


def test_plot_froc_and_draw_outcome_draw_what_they_say(small_test_set):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt, dets = small_test_set
    res = detect.evaluate_detectors(gt, dets, n_boot=5, seed=0)
    fig, (ax, ax2) = plt.subplots(1, 2)
    detect.plot_froc(ax, res, "test")
    assert len(ax.get_lines()) == len(res) + len(detect.FP_RATES) and ax.get_xscale() == "log"
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == list(res)
    g, (b, s) = gt[1], (dets["worse"][0][1], dets["worse"][1][1])
    detect.draw_outcome(ax2, np.zeros((64, 64)), g, b, s, 0.0, "an image")
    hits, misses, fps = detect.outcome(g, b, s, 0.0)
    assert len(ax2.patches) == len(hits) + len(misses) + len(fps)
    assert ax2.get_title().startswith("an image\n") and f"{len(fps)} FP" in ax2.get_title()
    plt.close(fig)


def test_sensitivity_at_equals_matching_only_the_detections_above_the_threshold(small_test_set):
    gt, dets = small_test_set
    det, scores = dets["worse"]
    for thr in (0.0, 0.3, 0.7, 1.1):
        hit = [detect.match_detections(g, b[s >= thr], s[s >= thr])[0] for g, b, s in zip(gt, det, scores)]
        assert detect.sensitivity_at(gt, det, scores, thr) == np.mean(np.isfinite(np.concatenate(hit)))
    with pytest.raises(ValueError, match="at least one lesion"):
        detect.sensitivity_at([np.zeros((0, 4))], [np.zeros((0, 4))], [np.zeros(0)], 0.5)


def test_lesion_boxes_of_a_3d_mask_with_two_parts_on_its_largest_slice():
    mask = np.zeros((5, 20, 30), np.uint8)
    mask[1:4, 2:6, 3:9] = 1  # a block over slices 1-3
    mask[2, 10:15, 20:28] = 1  # a second part on slice 2 only, which is then the largest
    size_mm, k, boxes = detect.lesion_boxes(mask, (2.0, 0.5, 0.5))
    assert k == 2
    assert size_mm == [3 * 2.0, 13 * 0.5, 25 * 0.5]
    np.testing.assert_array_equal(boxes, phantoms.boxes_from_mask(ndimage.label(mask[2])[0]))
    np.testing.assert_array_equal(boxes, [[3, 2, 9, 6], [20, 10, 28, 15]])
    with pytest.raises(ValueError):
        detect.lesion_boxes(np.zeros((2, 3, 3)), (1, 1, 1))


def test_show_boxes_and_the_sensitivity_grid_draw_what_they_say():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2)
    detect.show_boxes(ax, np.zeros((16, 16)), np.array([[2, 3, 6, 9], [0, 0, 4, 4]]), "two", color="red", vmin=0)
    assert len(ax.patches) == 2 and ax.get_title() == "two" and not ax.axison
    assert ax.patches[0].get_xy() == (1.5, 2.5) and ax.patches[0].get_width() == 4 and ax.patches[0].get_height() == 6
    grid = np.array([[0.1, 0.5], [0.7, 1.0], [0.2, 0.3]])
    detect.plot_sensitivity_grid(ax2, grid, (1.5, 3.0, 6.0), ["low", "high"])
    assert sorted(t.get_text() for t in ax2.texts) == sorted(f"{v:.2f}" for v in grid.ravel())
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["low", "high"]
    with pytest.raises(ValueError):
        detect.plot_sensitivity_grid(ax2, grid, (1.5, 3.0), ["low", "high"])
    plt.close(fig)
