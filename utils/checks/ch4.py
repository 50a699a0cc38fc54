"""Exercise checks of chapter 4 (lesion and target detection).

Each check calls the student's function on several inputs and compares the results with what
:mod:`utils.detect` (or pycocotools) computes on the same inputs, so a number copied from an
earlier output of the notebook cannot pass: only a function that computes the answer does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import detect, exercises

__all__ = ["ex_4_1", "ex_4_2", "ex_4_3", "ex_4_4"]

# boxes (x0, y0, x1, y1), half-open: overlapping, identical, disjoint, nested, touching, one inside a row
_IOU_PAIRS = [
    ((0, 0, 10, 10), (5, 5, 15, 15)),
    ((2, 3, 9, 8), (2, 3, 9, 8)),
    ((0, 0, 4, 4), (6, 6, 9, 9)),
    ((1, 1, 9, 9), (3, 2, 6, 7)),
    ((0, 0, 4, 4), (4, 0, 8, 4)),
    ((10, 12, 21, 21), (14, 10, 30, 16)),
]


def _random_boxes(rng, n, lo=0.0, hi=40.0):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(1.0, 15.0, (n, 2))
    return np.round(np.concatenate([xy, xy + wh], axis=1), 2)


def ex_4_1(my_iou: Callable, extra_pairs=(), seed: int = 4) -> exercises.CheckResult:
    """Exercise 4.1 (section 4.2): ``my_iou(a, b)`` against ``pycocotools.mask.iou`` on fixed and random boxes."""
    from pycocotools import mask as coco_mask

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    rng = np.random.default_rng(seed)
    a, b = _random_boxes(rng, 6), _random_boxes(rng, 6)
    pairs = list(_IOU_PAIRS) + [tuple(map(tuple, p)) for p in extra_pairs] + list(zip(map(tuple, a), map(tuple, b)))
    cases = [((p, q), float(coco_mask.iou([xywh(p)], [xywh(q)], [0])[0, 0])) for p, q in pairs]
    return exercises.check_function(
        "4.1",
        my_iou,
        cases,
        rtol=1e-9,
        atol=1e-12,
        hint="intersection width = min of the right edges − max of the left edges, clipped at 0; "
        "union = the two areas minus the intersection",
    )


def _reference_encode(box, stride):
    t = detect.encode_targets([np.array([box], float)], (128, 128), stride)[0]
    i, j = np.unravel_index(np.argmax(t[..., 0]), t.shape[:2])
    return [int(i), int(j), float(t[i, j, 3]), float(t[i, j, 4]), float(t[i, j, 1]), float(t[i, j, 2])]


def _reference_decode(i, j, dx, dy, sw, sh, stride):
    out = np.zeros((1, 128 // stride, 128 // stride, 5), np.float32)
    out[0, i, j] = [1.0, sw, sh, dx, dy]
    boxes, _ = detect.decode_numpy(out, stride, score_min=0.5)
    return [float(v) for v in boxes[0][0]]


def ex_4_2(encode_box: Callable, decode_box: Callable, seed: int = 42) -> exercises.CheckResult:
    """Exercise 4.2 (section 3.1): ``encode_box(box, R)`` -> ``(i, j, dx, dy, w/R, h/R)`` and
    ``decode_box(i, j, dx, dy, w/R, h/R, R)`` -> ``(x0, y0, x1, y1)``, against ``detect.encode_targets``
    and ``detect.decode_numpy`` on the exercise's box and on random boxes at strides 2 and 4.

    The decoder is also fed targets that no integer box produces (random offsets and sizes), so
    returning the encoded box unchanged does not pass.
    """
    rng = np.random.default_rng(seed)
    boxes = [(13, 20, 24, 27), (10, 12, 21, 21), (40, 30, 47, 38), (0, 0, 5, 3)]
    boxes += [tuple(int(v) for v in b) for b in np.round(_random_boxes(rng, 6, 2, 90))]
    enc_cases, dec_cases = [], []
    for k, box in enumerate(boxes):
        r = (4, 2)[k % 2]
        code = _reference_encode(box, r)
        enc_cases.append(((box, r), code))
        dec_cases.append(((*code, r), _reference_decode(*code, r)))
    for _ in range(4):  # targets that are not the code of an integer box
        r = int(rng.choice([2, 4]))
        i, j = (int(v) for v in rng.integers(2, 20, 2))
        dx, dy = (float(v) for v in np.round(rng.uniform(-0.5, 0.5, 2), 3))
        sw, sh = (float(v) for v in np.round(rng.uniform(1.0, 5.0, 2), 3))
        dec_cases.append(((i, j, dx, dy, sw, sh, r), _reference_decode(i, j, dx, dy, sw, sh, r)))

    def as_list(fn):
        return lambda *a: [float(v) for v in np.asarray(fn(*a), float).ravel()]

    enc, dec = as_list(encode_box), as_list(decode_box)
    hint = (
        "centre (x0 + x1 − 1)/2; cell coordinate u = (c − (R − 1)/2)/R; cell = floor(u + 1/2); offset u − cell; "
        "decode with c = (cell + offset)·R + (R − 1)/2 and x0 = c − (w − 1)/2, x1 = c + (w + 1)/2"
    )

    def both(kind, *a):
        return enc(*a) if kind == "enc" else dec(*a)

    cases = [(("enc", *args), exp) for args, exp in enc_cases] + [(("dec", *args), exp) for args, exp in dec_cases]
    return exercises.check_function("4.2", both, cases, rtol=0, atol=1e-5, hint=hint)


def _reference_screening(val, test, max_fp):
    thr = detect.threshold_at_fp_rate(detect.froc(*val), max_fp)
    gs = np.concatenate([detect.match_detections(g, b[s >= thr], s[s >= thr])[0] for g, b, s in zip(*test)])
    return [float(thr), float(np.mean(np.isfinite(gs)))]


def _hand_case():
    # two validation images and two test images with known lesions, detections and scores
    g = [np.array([[10, 10, 20, 20]], float), np.array([[30, 30, 40, 40], [2, 2, 8, 8]], float)]
    b = [
        np.array([[10, 10, 20, 20], [50, 50, 60, 60], [0, 40, 8, 48]], float),
        np.array([[31, 31, 41, 41], [60, 0, 64, 6], [2, 2, 8, 8]], float),
    ]
    s = [np.array([0.9, 0.8, 0.3]), np.array([0.7, 0.6, 0.2])]
    return (g, b, s), (g[::-1], b[::-1], [x * 0.95 for x in s[::-1]])


def ex_4_3(screening: Callable, val, test) -> exercises.CheckResult:
    """Exercise 4.3 (section 6): ``screening(val, test, max_fp)`` -> ``(thr, sens_test)``.

    ``val`` and ``test`` are ``(gt_boxes, det_boxes, det_scores)`` lists, one entry per image.  The
    check calls the function on the chapter's detections (``val``, ``test``) at 1 and at 1/2 FP per
    image, with validation and test swapped, and on a small hand-made case, and compares with
    ``detect.threshold_at_fp_rate`` and ``detect.match_detections``.
    """
    hand_val, hand_test = _hand_case()
    cases = [
        ((val, test, 1.0), _reference_screening(val, test, 1.0)),
        ((val, test, 0.5), _reference_screening(val, test, 0.5)),
        ((test, val, 1.0), _reference_screening(test, val, 1.0)),
        ((hand_val, hand_test, 0.5), _reference_screening(hand_val, hand_test, 0.5)),
    ]

    def fn(*a):
        return [float(v) for v in np.asarray(screening(*a), float).ravel()]

    return exercises.check_function(
        "4.3",
        fn,
        cases,
        rtol=1e-9,
        hint="on the validation FROC keep the thresholds whose fp_per_image is <= max_fp and take the smallest; "
        "on the test set, count the lesions hit by a detection scoring at least that threshold",
    )


def _reference_froc(lesion_scores, fp_scores, n_images):
    gts = [np.asarray(lesion_scores, float)] + [np.zeros(0)] * (n_images - 1)
    fps = [np.asarray(fp_scores, float)] + [np.zeros(0)] * (n_images - 1)
    f = detect.froc_from_scores(gts, fps)
    return [*map(float, f.sens_at), f.mean_sensitivity]


def ex_4_4(my_froc: Callable, seed: int = 44) -> exercises.CheckResult:
    """Exercise 4.4 (section 4.1): ``my_froc(lesion_scores, fp_scores, n_images)`` -> ``(sens, cpm)``.

    ``lesion_scores`` holds each lesion's best hit score (``-inf`` for a missed lesion) and
    ``fp_scores`` the false positives' scores, pooled over ``n_images`` images; ``sens`` are the
    sensitivities at 1/8 … 8 FP per image and ``cpm`` their mean.  Compared with
    ``detect.froc_from_scores`` on the exercise's data and on random cases with missed lesions.
    """
    rng = np.random.default_rng(seed)
    cases = [(([0.9, 0.4, 0.7], [0.8, 0.3, 0.2, 0.6], 2), None)]
    for n_images in (3, 5, 8):
        les = np.round(rng.uniform(0, 1, int(rng.integers(3, 9))), 3)
        les[rng.random(len(les)) < 0.25] = -np.inf
        fp = np.round(rng.uniform(0, 1, int(rng.integers(2, 30))), 3)
        cases.append(((list(les), list(fp), n_images), None))
    cases = [(args, _reference_froc(*args)) for args, _ in cases]

    def flat(*args):
        sens, cpm = my_froc(*args)
        return [*(float(v) for v in np.asarray(sens, float).ravel()), float(cpm)]

    return exercises.check_function(
        "4.4",
        flat,
        cases,
        rtol=1e-9,
        hint="walk the threshold down through all scores; FP per image = FP count / n_images; at each rate take "
        "the best sensitivity of any threshold with at most that many FP per image",
    )
