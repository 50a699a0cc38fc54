"""utils.detect: box encoding/decoding, losses, FROC, COCO mAP, blob baseline, a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest

from utils import course, detect, phantoms


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
