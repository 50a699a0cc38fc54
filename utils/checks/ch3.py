"""Exercise checks of chapter 3 (attention-based segmentation), one function per exercise.

Each check recomputes what it needs from the student's own objects (their function, their lists, the
trained model) and compares with :mod:`utils.segment`; it prints one line through :mod:`utils.exercises`
and returns its :class:`~utils.exercises.CheckResult`.  The unit tests in ``tests/test_checks_ch3.py``
give every check a wrong answer (which must fail), a differently written right answer (which must pass)
and the placeholder (reported as "not attempted").
"""

from __future__ import annotations

import numpy as np

from .. import exercises, segment

__all__ = ["ex_3_1", "ex_3_2", "ex_3_3", "ex_3_4", "hd95_cases"]


def _disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def ex_3_1(my_dice) -> exercises.CheckResult:
    """Exercise 3.1 (section 2.1): ``my_dice(a, b)``, Dice of two binary masks of any shape, 1.0 if both are empty.

    The expected values come from scikit-learn's ``f1_score`` on the flattened masks (Dice is the F1 score
    of the pixels), on masks of two, three and one dimensions, including masks given as 0/1 integers,
    plus the two empty-mask conventions of the chapter (both empty: 1.0; one empty: 0.0).
    """
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(31)
    masks = [
        (rng.random((64, 64)) > 0.7, _disc((64, 64), 30, 30, 9)),
        (rng.random((5, 7, 3)) > 0.5, rng.random((5, 7, 3)) > 0.4),
        (_disc((40, 40), 20, 20, 8).astype(np.uint8), _disc((40, 40), 22, 21, 8).astype(np.uint8)),
        (rng.random(50) > 0.9, rng.random(50) > 0.8),
    ]
    cases = [((a, b), float(f1_score(np.ravel(a).astype(bool), np.ravel(b).astype(bool)))) for a, b in masks]
    cases += [
        ((np.zeros((4, 4)), np.zeros((4, 4))), 1.0),
        ((np.ones((3, 3)), np.zeros((3, 3))), 0.0),
        ((np.zeros((2, 5), bool), np.eye(2, 5, dtype=bool)), 0.0),
    ]
    return exercises.check_function(
        "3.1", my_dice, cases, rtol=1e-9, hint="Dice = 2|A∩B| / (|A| + |B|); treat two empty masks separately"
    )


def ex_3_2(dice_a, dice_b) -> exercises.CheckResult:
    """Exercise 3.2 (section 2.1): per-case Dice lists on which mean Dice ranks A above B and mean IoU B above A.

    Recomputes both means from the student's lists (IoU = Dice / (2 − Dice) per case); the lists must be
    of one non-zero length, with values in [0, 1].
    """
    hint = "IoU = D/(2 − D) is convex: it rewards cases near 1 and punishes middling ones more than Dice does"
    if any(exercises._is_placeholder(v) for v in (dice_a, dice_b)):
        return exercises.check_true("3.2", exercises.NOT_ATTEMPTED, hint=hint)
    try:
        a, b = np.asarray(dice_a, float), np.asarray(dice_b, float)
    except (TypeError, ValueError):
        return exercises.check_true("3.2", False, hint="dice_a and dice_b must be lists of numbers. " + hint)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        return exercises.check_true(
            "3.2",
            False,
            hint="dice_a and dice_b must be two lists of one non-zero length (the same test cases). " + hint,
        )
    if not (
        np.isfinite(a).all()
        and np.isfinite(b).all()
        and a.min() >= 0
        and b.min() >= 0
        and a.max() <= 1
        and b.max() <= 1
    ):
        return exercises.check_true("3.2", False, hint="Dice values lie in [0, 1]. " + hint)
    iou_a, iou_b = a / (2 - a), b / (2 - b)
    return exercises.check_true("3.2", a.mean() > b.mean() and iou_a.mean() < iou_b.mean(), hint=hint)


def hd95_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """The mask pairs exercise 3.3 is checked on (all non-empty, 2-D).

        Shifted discs (symmetric errors), a disc against an ellipse with a stray blob (lopsided errors, where
        the larger of the directed 95th percentiles and the pooled 95th percentile differ), masks that touch
        the image border (where the border must count as background), a square against the same square with
    a hole (distances go to the other *surface*, not to the other mask) and smoothed random blobs.
    """
    from scipy import ndimage

    pairs = [
        (_disc((96, 96), 48, 40, 20), _disc((96, 96), 48, 44, 20)),
        (_disc((96, 96), 48, 40, 20), _disc((96, 96), 48, 40, 20)),
    ]
    yy, xx = np.mgrid[:64, :64]
    ellipse = ((yy - 30) / 14.0) ** 2 + ((xx - 28) / 9.0) ** 2 <= 1
    blob = ellipse | _disc((64, 64), 55, 55, 3)
    pairs.append((_disc((64, 64), 30, 28, 11), blob))
    edge_a = np.zeros((32, 32), bool)
    edge_a[:12, :20] = True
    edge_b = np.zeros((32, 32), bool)
    edge_b[:15, 3:20] = True
    pairs.append((edge_a, edge_b))
    square = np.zeros((40, 40), bool)
    square[5:35, 5:35] = True
    holed = square.copy()
    holed[14:26, 14:26] = False  # a hole: its rim is surface of one mask and lies inside the other
    pairs.append((square, holed))
    rng = np.random.default_rng(33)
    for _ in range(2):
        a = ndimage.gaussian_filter(rng.normal(size=(48, 48)), 3) > 0.05
        b = ndimage.gaussian_filter(rng.normal(size=(48, 48)), 3) > 0.05
        pairs.append((a, b))
    return [(a, b) for a, b in pairs if a.any() and b.any()]


def ex_3_3(my_hd95) -> exercises.CheckResult:
    """Exercise 3.3 (section 2.2): ``my_hd95(a, b)`` for two non-empty 2-D masks, the chapter's HD95.

    Compared with :func:`utils.segment.hd95` (``convention="max"``: the larger of the two directed 95th
    percentiles) on :func:`hd95_cases`, which include pairs where the pooled convention, the maximum
    (the plain Hausdorff distance), other surfaces or distances to the whole mask give other values.
    """
    cases = [((a, b), segment.hd95(a, b)) for a, b in hd95_cases()]
    return exercises.check_function(
        "3.3",
        my_hd95,
        cases,
        rtol=1e-9,
        atol=1e-9,
        hint="distances go from the surface of one mask to the surface of the other, both ways, and HD95 is the "
        "larger of the two directed 95th percentiles; distance_transform_edt measures the distance to the "
        "nearest zero",
    )


def _subsets(n: int) -> list[np.ndarray]:
    idx = np.arange(n)
    out = [idx]
    if n >= 4:
        out += [idx[::2], idx[n // 3 :]]
    return out


def ex_3_4(gate_contrast, model, images, masks) -> exercises.CheckResult:
    """Exercise 3.4 (section 6): ``gate_contrast(model, images, masks) -> (inside, outside, ratio)``.

    ``inside`` / ``outside`` are the mean coefficient of the finest gate (``"att0"``) over all lesion
    pixels / all other pixels of ``images`` (pooled over the images, not averaged per image), and
    ``ratio = inside / outside``.  The check calls the student's function on the trained ``model`` with all
    the given images and with two subsets of them, and compares with :func:`utils.segment.attention_maps`
    and :func:`utils.segment.mean_inside_outside` (relative tolerance 1e-4).
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks)
    maps = segment.attention_maps(model, images)["att0"]
    truth = (masks[..., 0] if masks.ndim == 4 else masks) > 0
    cases = []
    for idx in _subsets(len(images)):
        inside, outside = segment.mean_inside_outside(maps[idx], truth[idx])
        cases.append(((model, images[idx], masks[idx]), (inside, outside, inside / outside)))
    return exercises.check_function(
        "3.4",
        gate_contrast,
        cases,
        rtol=1e-4,
        hint="average the att0 maps of all the given images over all lesion pixels together and over all other "
        "pixels together; return (inside, outside, inside / outside)",
    )
