"""Tests of the exercise checks of chapter 4 (utils.checks.ch4): wrong answers fail, other right answers
pass, placeholders are reported as not attempted."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import placeholder

from utils import detect, exercises
from utils.checks import ch4

# --- 4.1 IoU ---------------------------------------------------------------------------------------------


def iou_reference(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_vectorised(a, b):  # a differently written right answer: through detect.box_iou's NumPy route
    a, b = np.asarray([a], float), np.asarray([b], float)
    return float(detect.box_iou(a, b)[0, 0])


def iou_inclusive(a, b):  # wrong: PASCAL-style inclusive pixel boxes (+1 on every side)
    a = (a[0], a[1], a[2] + 1, a[3] + 1)
    b = (b[0], b[1], b[2] + 1, b[3] + 1)
    return iou_reference(a, b)


def iou_no_clip(a, b):  # wrong: negative widths not clipped
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_ex_4_1(capsys):
    assert ch4.ex_4_1(iou_reference)
    assert ch4.ex_4_1(iou_vectorised)
    assert not ch4.ex_4_1(iou_inclusive)
    assert not ch4.ex_4_1(iou_no_clip)
    assert not ch4.ex_4_1(lambda a, b: 0.1429)  # a number, not a computation
    capsys.readouterr()
    assert not ch4.ex_4_1(placeholder)
    assert "not attempted" in capsys.readouterr().out


# --- 4.2 encode / decode ---------------------------------------------------------------------------------


def encode_ref(box, R):
    cx, cy = (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2
    ux, uy = (cx - (R - 1) / 2) / R, (cy - (R - 1) / 2) / R
    j, i = int(np.floor(ux + 0.5)), int(np.floor(uy + 0.5))
    return i, j, ux - j, uy - i, (box[2] - box[0]) / R, (box[3] - box[1]) / R


def decode_ref(i, j, dx, dy, sw, sh, R):
    w, h = sw * R, sh * R
    cx, cy = (j + dx) * R + (R - 1) / 2, (i + dy) * R + (R - 1) / 2
    return cx - (w - 1) / 2, cy - (h - 1) / 2, cx + (w + 1) / 2, cy + (h + 1) / 2


def encode_alt(box, R):  # the same, written in arrays and with round-half-up via floor
    b = np.asarray(box, float)
    c = np.array([b[0] + b[2] - 1, b[1] + b[3] - 1]) / 2
    u = c / R - (R - 1) / (2 * R)
    cell = np.floor(u + 0.5)
    off = u - cell
    return np.array([cell[1], cell[0], off[0], off[1], (b[2] - b[0]) / R, (b[3] - b[1]) / R])


def decode_alt(i, j, dx, dy, sw, sh, R):  # via the box's half sizes
    cx, cy = R * (j + dx) + R / 2 - 0.5, R * (i + dy) + R / 2 - 0.5
    hw, hh = sw * R / 2, sh * R / 2
    return [cx - hw + 0.5, cy - hh + 0.5, cx + hw + 0.5, cy + hh + 0.5]


def encode_round(box, R):  # wrong: centre as (x0 + x1) / 2 (forgets the half-open convention)
    i, j, dx, dy, sw, sh = encode_ref((box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1), R)
    return i, j, dx, dy, sw, sh


def decode_no_offset(i, j, dx, dy, sw, sh, R):  # wrong: ignores the offset head
    return decode_ref(i, j, 0.0, 0.0, sw, sh, R)


def test_ex_4_2(capsys):
    assert ch4.ex_4_2(encode_ref, decode_ref)
    assert ch4.ex_4_2(encode_alt, decode_alt)
    assert not ch4.ex_4_2(encode_round, decode_ref)
    assert not ch4.ex_4_2(encode_ref, decode_no_offset)
    # the exercise's numbers typed in: right for one box only
    assert not ch4.ex_4_2(lambda box, R: (5, 4, 0.125, 0.375, 2.75, 1.75), decode_ref)
    assert not ch4.ex_4_2(encode_ref, lambda i, j, dx, dy, sw, sh, R: (13, 20, 24, 27))
    capsys.readouterr()
    assert not ch4.ex_4_2(placeholder, decode_ref)
    assert "not attempted" in capsys.readouterr().out
    assert not ch4.ex_4_2(encode_ref, placeholder)
    assert "not attempted" in capsys.readouterr().out


# --- 4.3 operating point ---------------------------------------------------------------------------------


def _detections(seed, n=12):
    rng = np.random.default_rng(seed)
    gts, boxes, scores = [], [], []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        g = np.round(rng.uniform(0, 50, (k, 2)))
        g = np.concatenate([g, g + rng.integers(4, 10, (k, 2))], axis=1).astype(float)
        hits = g[rng.random(k) < 0.8]
        hits = hits + np.round(rng.normal(0, 0.5, hits.shape), 2)  # found, a little off
        fp = np.round(rng.uniform(0, 50, (int(rng.integers(0, 5)), 2)))
        fp = np.concatenate([fp, fp + 6], axis=1)
        b = np.concatenate([hits, fp]).reshape(-1, 4)
        gts.append(g.reshape(-1, 4))
        boxes.append(b)
        scores.append(np.round(rng.uniform(0.05, 1, len(b)), 4))
    return gts, boxes, scores


def screening_ref(val, test, max_fp):
    f = detect.froc(*val)
    thr = float(f.thresholds[f.fp_per_image <= max_fp].min())
    ft = detect.froc(*test)
    return thr, float(ft.sensitivity[ft.thresholds >= thr].max())


def screening_alt(val, test, max_fp):  # by counting matches directly, without the FROC of the test set
    thr = detect.threshold_at_fp_rate(detect.froc(*val), max_fp)
    found = total = 0
    for g, b, s in zip(*test):
        which = detect.hit_index(g, b[s >= thr])
        found += len(np.unique(which[which >= 0]))
        total += len(g)
    return thr, found / total


def screening_highest(val, test, max_fp):  # wrong: the highest admissible threshold (finds the fewest lesions)
    f = detect.froc(*val)
    thr = float(f.thresholds[1:][f.fp_per_image[1:] <= max_fp].max())
    ft = detect.froc(*test)
    return thr, float(ft.sensitivity[ft.thresholds >= thr].max())


def screening_on_test(val, test, max_fp):  # wrong: the threshold chosen on the test set
    return screening_ref(test, test, max_fp)


def test_ex_4_3(capsys):
    val, test = _detections(1), _detections(2)
    assert ch4.ex_4_3(screening_ref, val, test)
    assert ch4.ex_4_3(screening_alt, val, test)
    assert not ch4.ex_4_3(screening_highest, val, test)
    assert not ch4.ex_4_3(screening_on_test, val, test)
    fixed = screening_ref(val, test, 1.0)
    assert not ch4.ex_4_3(lambda v, t, m: fixed, val, test)  # the printed numbers typed in
    capsys.readouterr()
    assert not ch4.ex_4_3(placeholder, val, test)
    assert "not attempted" in capsys.readouterr().out


# --- 4.4 FROC / CPM --------------------------------------------------------------------------------------

RATES = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)


def froc_ref(lesion_scores, fp_scores, n_images):
    les, fps = np.asarray(lesion_scores, float), np.asarray(fp_scores, float)
    cand = np.concatenate([[np.inf], np.sort(np.concatenate([les[np.isfinite(les)], fps]))[::-1]])
    sens_t = np.array([(les >= t).mean() for t in cand])
    fp_t = np.array([(fps >= t).sum() / n_images for t in cand])
    sens = [float(sens_t[fp_t <= r].max()) for r in RATES]
    return sens, float(np.mean(sens))


def froc_loop(lesion_scores, fp_scores, n_images):  # a differently written right answer: a plain loop
    les = [s for s in lesion_scores if np.isfinite(s)]
    n_les = len(lesion_scores)
    best = {r: 0.0 for r in RATES}
    for t in sorted(set(les) | set(fp_scores), reverse=True):
        s = sum(x >= t for x in les) / n_les
        f = sum(x >= t for x in fp_scores) / n_images
        for r in RATES:
            if f <= r:
                best[r] = max(best[r], s)
    sens = [best[r] for r in RATES]
    return sens, sum(sens) / len(sens)


def froc_per_fp_count(lesion_scores, fp_scores, n_images):  # wrong: FP counted in total, not per image
    return froc_ref(lesion_scores, fp_scores, 1)


def froc_strict(lesion_scores, fp_scores, n_images):  # wrong: "fewer than" instead of "at most" r FP/image
    les, fps = np.asarray(lesion_scores, float), np.asarray(fp_scores, float)
    cand = np.concatenate([[np.inf], np.sort(np.concatenate([les[np.isfinite(les)], fps]))[::-1]])
    sens_t = np.array([(les >= t).mean() for t in cand])
    fp_t = np.array([(fps >= t).sum() / n_images for t in cand])
    sens = [float(sens_t[fp_t < r].max()) for r in RATES]
    return sens, float(np.mean(sens))


def test_ex_4_4(capsys):
    assert ch4.ex_4_4(froc_ref)
    assert ch4.ex_4_4(froc_loop)
    assert not ch4.ex_4_4(froc_per_fp_count)
    assert not ch4.ex_4_4(froc_strict)
    worked = froc_ref([0.9, 0.4, 0.7], [0.8, 0.3, 0.2, 0.6], 2)
    assert not ch4.ex_4_4(lambda les, fp, n: worked)  # the worked example's answer typed in
    capsys.readouterr()
    assert not ch4.ex_4_4(placeholder)
    assert "not attempted" in capsys.readouterr().out


def test_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(exercises.ExerciseFailed):
        ch4.ex_4_1(iou_inclusive)
