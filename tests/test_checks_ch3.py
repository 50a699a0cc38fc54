"""utils.checks.ch3: every check fails a wrong answer, passes a differently written right one, and reports
the placeholder as not attempted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import placeholder, reported_not_attempted
from scipy import ndimage
from scipy.spatial import cKDTree

from utils import course, exercises, segment
from utils.checks import ch3

# ---------------------------------------------------------------------------
# 3.1 Dice
# ---------------------------------------------------------------------------


def dice_reference_style(a, b):  # the notebook's solution
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def dice_via_counts(a, b):  # another right answer: TP, FP, FN
    a, b = np.ravel(a) != 0, np.ravel(b) != 0
    tp = np.count_nonzero(a & b)
    fp, fn = np.count_nonzero(~a & b), np.count_nonzero(a & ~b)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou_instead(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def dice_no_empty_convention(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 0.0 if total == 0 else float(2 * (a & b).sum() / total)


def test_ex_3_1_passes_right_answers():
    assert ch3.ex_3_1(dice_reference_style)
    assert ch3.ex_3_1(dice_via_counts)
    assert ch3.ex_3_1(segment.dice)


@pytest.mark.parametrize("wrong", [iou_instead, dice_no_empty_convention, lambda a, b: 0.5])
def test_ex_3_1_fails_wrong_answers(wrong):
    assert not ch3.ex_3_1(wrong)


def test_ex_3_1_placeholder_and_crash(capsys):
    assert reported_not_attempted(ch3.ex_3_1(placeholder), capsys, "3.1")
    assert not ch3.ex_3_1(lambda a, b: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_ex_3_1_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(exercises.ExerciseFailed):
        ch3.ex_3_1(iou_instead)


# ---------------------------------------------------------------------------
# 3.2 Dice and IoU rank differently
# ---------------------------------------------------------------------------


def test_ex_3_2_passes_right_answers():
    assert ch3.ex_3_2([0.6, 0.6], [1.0, 0.18])  # the notebook's solution
    assert ch3.ex_3_2([0.5, 0.5], [0.95, 0.0])  # another: mean Dice 0.5 > 0.475, mean IoU 1/3 < 0.45
    assert ch3.ex_3_2(np.array([0.7, 0.7, 0.7]), (1.0, 1.0, 0.05))


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.9, 0.9], [0.5, 0.5]),  # both metrics rank A first
        ([0.5, 0.5], [1.0, 0.5]),  # both metrics rank B first
        ([0.55, 0.55], [1.0, 0.1]),  # a tie on mean Dice: A is not ranked above B
        ([0.6, 0.6], [1.0]),  # different lengths
        ([], []),  # no cases
        ([0.6, 1.2], [1.5, -0.5]),  # not Dice values
        ([0.6, 0.6], [1.0, float("nan")]),
        ("0.6", "0.5"),  # not lists of numbers
        ([[0.6, 0.6]], [[1.0, 0.18]]),  # not flat lists
    ],
)
def test_ex_3_2_fails_wrong_answers(a, b):
    assert not ch3.ex_3_2(a, b)


def test_ex_3_2_placeholder(capsys):
    assert reported_not_attempted(ch3.ex_3_2(exercises.NOT_ATTEMPTED, exercises.NOT_ATTEMPTED), capsys, "3.2")
    assert reported_not_attempted(ch3.ex_3_2([0.6, 0.6], exercises.NOT_ATTEMPTED), capsys, "3.2")


# ---------------------------------------------------------------------------
# 3.3 HD95
# ---------------------------------------------------------------------------


def _hd95_by_erosion(a, b, *, connectivity=1, border_value=0, to_surface=True, both_directions=True):
    """The notebook's solution, and with one argument changed, a wrong answer a student might write."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    structure = ndimage.generate_binary_structure(2, connectivity)
    surf_a = a & ~ndimage.binary_erosion(a, structure, border_value=border_value)
    surf_b = b & ~ndimage.binary_erosion(b, structure, border_value=border_value)
    to_b = ndimage.distance_transform_edt(~(surf_b if to_surface else b))[surf_a]
    to_a = ndimage.distance_transform_edt(~(surf_a if to_surface else a))[surf_b]
    if not both_directions:
        return float(np.percentile(to_b, 95))
    return float(max(np.percentile(to_b, 95), np.percentile(to_a, 95)))


def hd95_reference_style(a, b):  # the notebook's solution
    return _hd95_by_erosion(a, b)


def _surface_by_neighbours(m):
    padded = np.pad(m, 1, constant_values=False)
    core = padded[1:-1, 1:-1]
    all_in = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(core & ~all_in)


def hd95_kdtree(a, b):  # another right answer: neighbours by slicing, nearest surface pixel by a k-d tree
    pa, pb = _surface_by_neighbours(np.asarray(a, bool)), _surface_by_neighbours(np.asarray(b, bool))
    d_ab, _ = cKDTree(pb).query(pa)
    d_ba, _ = cKDTree(pa).query(pb)
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def hd95_pooled(a, b):  # MedPy's convention, not the chapter's
    return segment.hd95(a, b, convention="pooled")


def hd95_max_distance(a, b):  # the plain Hausdorff distance
    return segment.hausdorff(a, b)


def hd95_eight_connected(a, b):  # surfaces by the 3x3 square instead of the cross
    return _hd95_by_erosion(a, b, connectivity=2)


def hd95_border_not_background(a, b):  # erosion with border_value=1: pixels on the image border are not surface
    return _hd95_by_erosion(a, b, border_value=1)


def hd95_to_whole_mask(a, b):  # distances to the other mask's pixels, not to its surface
    return _hd95_by_erosion(a, b, to_surface=False)


def hd95_one_direction(a, b):
    return _hd95_by_erosion(a, b, both_directions=False)


def test_ex_3_3_passes_right_answers():
    assert ch3.ex_3_3(hd95_reference_style)
    assert ch3.ex_3_3(hd95_kdtree)
    assert ch3.ex_3_3(segment.hd95)


@pytest.mark.parametrize(
    "wrong",
    [
        hd95_pooled,
        hd95_max_distance,
        hd95_eight_connected,
        hd95_border_not_background,
        hd95_to_whole_mask,
        hd95_one_direction,
    ],
)
def test_ex_3_3_fails_wrong_answers(wrong):
    assert not ch3.ex_3_3(wrong)


def test_ex_3_3_cases_separate_the_two_conventions():
    cases = ch3.hd95_cases()
    assert all(a.any() and b.any() and a.ndim == 2 for a, b in cases)
    assert any(abs(segment.hd95(a, b) - segment.hd95(a, b, convention="pooled")) > 0.1 for a, b in cases)
    assert any(a[0].any() or a[:, 0].any() for a, _ in cases)  # a mask that touches the border


def test_ex_3_3_placeholder(capsys):
    assert reported_not_attempted(ch3.ex_3_3(placeholder), capsys, "3.3")


# ---------------------------------------------------------------------------
# 3.4 the finest gate on lesion pixels and elsewhere
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate_setup():
    """A stand-in for a trained Attention U-Net: its "att0_alpha" layer is sigmoid(image), plus an "att1" gate.

    The images are noise with brighter discs of different radii in the masks, so that pooled and per-image
    means differ and the lesion pixels have larger coefficients than the rest.
    """
    course.setup("fast", 0, fast={}, full={})
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 1))
    att0 = layers.Activation("sigmoid", name="att0_alpha")(inputs)
    att1 = layers.Activation("sigmoid", name="att1_alpha")(layers.AveragePooling2D(2)(inputs))
    model = keras.Model(inputs, [att0, att1])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    masks, images = [], []
    for i in range(6):
        r = 1.5 + i
        m = (yy - 8) ** 2 + (xx - 7) ** 2 <= r * r
        masks.append(m[..., None].astype(np.float32))
        images.append((rng.normal(0, 1, (16, 16)) + 1.5 * m)[..., None].astype(np.float32))
    return model, np.stack(images), np.stack(masks)


def gate_contrast_reference_style(model, images, masks):  # the notebook's solution
    alpha0 = segment.attention_maps(model, images)["att0"]
    lesion = masks[..., 0] > 0
    inside, outside = float(alpha0[lesion].mean()), float(alpha0[~lesion].mean())
    return inside, outside, inside / outside


def gate_contrast_by_probe(model, images, masks):  # another right answer: its own probe model, sums and counts
    import keras

    probe = keras.Model(model.input, model.get_layer("att0_alpha").output)
    alpha = keras.ops.convert_to_numpy(probe(np.asarray(images, np.float32)))[..., 0]
    m = np.squeeze(np.asarray(masks), -1).astype(bool)
    s_in, n_in = (alpha * m).sum(), m.sum()
    s_out, n_out = (alpha * ~m).sum(), (~m).sum()
    return [s_in / n_in, s_out / n_out, (s_in / n_in) / (s_out / n_out)]


def gate_contrast_per_image(model, images, masks):  # averages per image first: not the pooled mean
    alpha0 = segment.attention_maps(model, images)["att0"]
    lesion = masks[..., 0] > 0
    inside = float(np.mean([a[m].mean() for a, m in zip(alpha0, lesion)]))
    outside = float(np.mean([a[~m].mean() for a, m in zip(alpha0, lesion)]))
    return inside, outside, inside / outside


def gate_contrast_inverted_ratio(model, images, masks):
    inside, outside, _ = gate_contrast_reference_style(model, images, masks)
    return inside, outside, outside / inside


def gate_contrast_outside_is_everything(model, images, masks):
    alpha0 = segment.attention_maps(model, images)["att0"]
    lesion = masks[..., 0] > 0
    inside, outside = float(alpha0[lesion].mean()), float(alpha0.mean())
    return inside, outside, inside / outside


def gate_contrast_coarser_gate(model, images, masks):
    alpha1 = segment.attention_maps(model, images)["att1"]
    lesion = masks[:, ::2, ::2, 0] > 0
    inside, outside = float(alpha1[lesion].mean()), float(alpha1[~lesion].mean())
    return inside, outside, inside / outside


def test_ex_3_4_passes_right_answers(gate_setup):
    model, images, masks = gate_setup
    assert ch3.ex_3_4(gate_contrast_reference_style, model, images, masks)
    assert ch3.ex_3_4(gate_contrast_by_probe, model, images, masks)


def test_ex_3_4_fails_wrong_answers(gate_setup):
    model, images, masks = gate_setup
    for wrong in (
        gate_contrast_per_image,
        gate_contrast_inverted_ratio,
        gate_contrast_outside_is_everything,
        gate_contrast_coarser_gate,
    ):
        assert not ch3.ex_3_4(wrong, model, images, masks), wrong.__name__
    # numbers computed once on all the images and returned whatever the input: the subsets catch them
    fixed = gate_contrast_reference_style(model, images, masks)
    assert not ch3.ex_3_4(lambda *args: fixed, model, images, masks)


def test_ex_3_4_placeholder(gate_setup, capsys):
    model, images, masks = gate_setup
    assert reported_not_attempted(ch3.ex_3_4(placeholder, model, images, masks), capsys, "3.4")
