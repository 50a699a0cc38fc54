"""Deterministic synthetic phantoms with exact lesion masks, instance maps and boxes.

The segmentation and detection chapters need images whose ground truth is
*known exactly*: lesion size, contrast, position and support.  This module
draws CT-like axial "body" slices (pure NumPy/SciPy, no Keras) and pastes
elliptical nodules into them, or into a real image (:func:`insert_nodules`).

Functions
---------
- :func:`make_lesion_phantoms`        N images with 0..k lesions each (segmentation, detection, FROC)
- :func:`make_classification_phantoms` N images, an exact fraction with a lesion (label = lesion present)
- :func:`insert_nodules`              paste nodules into a real 2-D image (e.g. a CT slice in HU)
- :func:`boxes_from_mask`             boxes of an instance map (``scipy.ndimage.find_objects``)
- :func:`to_hu`                       phantom intensities back to Hounsfield units

Conventions (exact, and tested)
-------------------------------
Pixel coordinates
    Pixel ``image[r, c]`` (row ``r``, column ``c``) has its *centre* at the point
    ``(x, y) = (c, r)``.  ``x`` grows to the right, ``y`` grows *downwards*.
Lesion geometry
    A lesion is an ellipse with centre ``(cx, cy)`` (sub-pixel, float),
    semi-axes ``a >= b`` and orientation ``angle`` (radians; the ``a`` axis is
    rotated from +x towards +y, i.e. clockwise on screen).  Its *equivalent
    radius* is ``r = sqrt(a * b)`` (the disc of the same area); the ``radius``
    argument of the generators draws ``r``, the ``aspect`` argument draws
    ``a / b``, so ``a = r * sqrt(aspect)`` and ``b = r / sqrt(aspect)``.
Mask (the lesion's support)
    ``mask[r, c] = 1``  iff  ``(u / a)**2 + (v / b)**2 <= 1``, where ``(u, v)``
    is the pixel centre ``(c - cx, r - cy)`` rotated by ``-angle``.  The mask is
    therefore defined analytically at pixel centres; it is not a threshold of
    the blurred image.
Soft edge (``softness = s`` pixels)
    The lesion adds ``contrast * p`` to the image, where ``p = 0`` outside the
    mask and, inside, ``p = smoothstep(clip((d + 0.5) / s, 0, 1))`` with ``d``
    a first-order estimate of the distance in pixels from the pixel centre to
    the ellipse boundary (exact for discs) and ``smoothstep(t) = t*t*(3 - 2t)``.  So the profile rises from the
    boundary to full contrast over ``s`` pixels *inwards* and never leaks
    outside the mask: the lesion layer is non-zero exactly on the mask (for a
    non-zero contrast), and ``s = 0`` gives a hard edge (``p = 1`` on the mask).
    ``contrast`` is the peak contrast, reached where ``d >= s - 0.5``.
Contrast
    Additive and relative to the local background: the image is
    ``background + contrast * p`` (before acquisition noise and clipping), in
    the image's own units: phantom intensity units for the generators, e.g.
    HU for :func:`insert_nodules` on a CT slice.  Negative contrast makes
    hypodense lesions.  The generators place each lesion inside one tissue,
    ``margin`` pixels from any other where there is room (see
    :func:`make_lesion_phantoms`), so the ring around it is that background.
Boxes
    ``(x0, y0, x1, y1)`` int64, *half-open* pixel index ranges:
    ``mask[y0:y1, x0:x1]`` holds the whole lesion and the lesion touches all
    four sides (``x0`` = first column, ``x1`` = last column + 1).  This is
    ``skimage.measure.regionprops(...).bbox`` reordered to x-first; use
    ``boxes.astype("float32")`` for detection losses that want floats.
Instances
    ``instances`` is int32, 0 = background, lesion ``i`` of an image is label
    ``i + 1`` and row ``i`` of ``boxes``/``centers``/``radii``/...; lesions are
    numbered by decreasing equivalent radius (label 1 = largest).
Phantom intensities
    float32 in [0, 1]: a CT soft-tissue window (centre 40 HU, width 400 HU),
    ``I = (HU + 160) / 400``, clipped like a displayed window, so air
    (-1000 HU) and bone saturate at 0 and 1.  Fat ~ 0.15, soft tissue ~ 0.44,
    liver ~ 0.50, muscle and spleen ~ 0.53, kidneys ~ 0.64, enhanced vessels
    0.75-0.85, plus a texture of standard deviation ``texture`` (0.025).
    A contrast of 0.1 is 40 HU.  :func:`to_hu` inverts the mapping (not the
    clipping).  ``noise`` is the standard deviation of the acquisition noise in
    the same units (0.03 = 12 HU).
Determinism
    Image ``i`` is drawn from its own generator,
    ``numpy.random.default_rng(seed).spawn(n)[i]``: the same arguments give
    bit-identical arrays, different seeds give different images, and the
    first ``m`` images of a batch of ``n`` equal a batch of ``m`` (so a fast CI
    profile sees a prefix of the full data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage

__all__ = [
    "HU_WINDOW",
    "PhantomBatch",
    "InsertedNodules",
    "make_lesion_phantoms",
    "make_classification_phantoms",
    "insert_nodules",
    "boxes_from_mask",
    "to_hu",
]

#: The CT window (HU at intensity 0, HU at intensity 1) the phantoms are drawn in.
HU_WINDOW = (-160.0, 240.0)


def _w(hu: float) -> float:
    """HU to phantom intensity units (unclipped)."""
    lo, hi = HU_WINDOW
    return (hu - lo) / (hi - lo)


_AIR = _w(-1000.0)  # -2.1: air saturates to 0 after clipping, as on a display
_FAT = _w(-100.0)  # 0.15
_MUSCLE = _w(50.0)  # 0.525
_TISSUE = _w(15.0)  # 0.4375
_AORTA = _w(180.0)  # 0.85
_BONE = _w(900.0)  # saturates
_MARROW = _w(220.0)  # 0.95

# tissue classes of the background (see _anatomy and _place_in_anatomy)
_C_AIR, _C_PARENCHYMA, _C_EXCLUDED, _C_FAT, _C_ORGAN = 0, 1, 3, 4, 10  # organ j is class 10 + j

_MAX_ATTEMPTS = 20  # backgrounds tried before giving up on fitting the lesions
_PLACE_TRIES = 10  # random greedy placements tried per background and placement rule
_SITE_NAMES = {
    _C_PARENCHYMA: "soft tissue",
    _C_FAT: "fat",
    _C_ORGAN: "liver",
    _C_ORGAN + 1: "spleen",
    _C_ORGAN + 2: "kidney",
    _C_ORGAN + 3: "kidney",
}


def to_hu(images):
    """Phantom intensities to Hounsfield units: ``HU = 400 * I - 160`` (see :data:`HU_WINDOW`).

    Values clipped at 0 or 1 by the window (air, bone) stay at -160 / 240 HU.
    Returns float32 for float32 input, float64 otherwise.
    """
    x = np.asarray(images)
    dt = np.float32 if x.dtype == np.float32 else np.float64
    lo, hi = HU_WINDOW
    return (x.astype(dt) * dt(hi - lo) + dt(lo)).astype(dt)


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


@dataclass
class PhantomBatch:
    """A batch of phantoms and their exact ground truth.

    Arrays have one leading axis of length ``N`` (the images); per-lesion data
    are lists of ``N`` arrays whose first axis is the image's lesion count
    ``k_i`` (possibly 0).  Row ``j`` of every per-lesion array describes the
    lesion with label ``j + 1`` in ``instances[i]``.

    Attributes
    ----------
    images : float32 (N, H, W), in [0, 1] (CT window, see the module docstring)
    masks : uint8 (N, H, W), 1 on lesion pixels; equals ``instances > 0``
    instances : int32 (N, H, W), 0 background, 1..k_i lesions
    body : uint8 (N, H, W), 1 inside the patient's body outline
    boxes : list of int64 (k_i, 4), ``(x0, y0, x1, y1)`` half-open
    centers : list of float64 (k_i, 2), ``(cx, cy)`` in pixel coordinates
    radii : list of float64 (k_i,), equivalent radius ``sqrt(a * b)`` in pixels
    axes : list of float64 (k_i, 2), semi-axes ``(a, b)``, ``a >= b``
    angles : list of float64 (k_i,), orientation of the ``a`` axis, radians
    contrasts : list of float64 (k_i,), additive peak contrast (intensity units)
    sites : list of str arrays (k_i,), the tissue under the lesion: ``"soft tissue"``, ``"liver"``,
        ``"spleen"``, ``"kidney"``, or ``"mixed"`` if the lesion overlaps an organ's edge
    labels : int64 (N,), 1 if the image holds a lesion, else 0
    params : dict, the arguments that produced the batch
    """

    images: np.ndarray
    masks: np.ndarray
    instances: np.ndarray
    body: np.ndarray
    boxes: list
    centers: list
    radii: list
    axes: list
    angles: list
    contrasts: list
    sites: list
    labels: np.ndarray
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_lesions(self) -> np.ndarray:
        """Number of lesions per image, int64 (N,)."""
        return np.array([len(b) for b in self.boxes], dtype=np.int64)

    def lesion_table(self) -> dict:
        """One row per lesion, as a dict of 1-D arrays (``pandas.DataFrame(batch.lesion_table())``).

        Columns: ``image``, ``label`` (instance id), ``x0, y0, x1, y1``, ``cx, cy``,
        ``radius``, ``a``, ``b``, ``angle``, ``contrast``, ``site``, ``area`` (mask pixels).
        """
        k = self.n_lesions
        image = np.repeat(np.arange(len(self)), k)
        label = np.concatenate([np.arange(1, m + 1) for m in k]) if len(self) else np.zeros(0, np.int64)
        boxes = np.concatenate(self.boxes) if len(self) else np.zeros((0, 4), np.int64)
        centers = np.concatenate(self.centers) if len(self) else np.zeros((0, 2))
        axes = np.concatenate(self.axes) if len(self) else np.zeros((0, 2))

        def cat(xs, dt):
            return np.concatenate(xs).astype(dt) if len(xs) else np.zeros(0, dt)

        area = [np.bincount(self.instances[i].ravel(), minlength=m + 1)[1 : m + 1] for i, m in enumerate(k)]
        return {
            "image": image.astype(np.int64),
            "label": label.astype(np.int64),
            "x0": boxes[:, 0],
            "y0": boxes[:, 1],
            "x1": boxes[:, 2],
            "y1": boxes[:, 3],
            "cx": centers[:, 0],
            "cy": centers[:, 1],
            "radius": cat(self.radii, np.float64),
            "a": axes[:, 0],
            "b": axes[:, 1],
            "angle": cat(self.angles, np.float64),
            "contrast": cat(self.contrasts, np.float64),
            "site": cat(self.sites, "<U11"),
            "area": cat(area, np.int64),
        }


@dataclass
class InsertedNodules:
    """Result of :func:`insert_nodules`; unpacks as ``image, mask, boxes``.

    Attributes
    ----------
    image : (H, W) float32 (float64 if the input was float64); equal to the
        input outside ``mask``
    mask : uint8 (H, W), 1 on nodule pixels
    instances : int32 (H, W), 0 background, 1..n nodules (decreasing radius)
    boxes, centers, radii, axes, angles, contrasts : as in :class:`PhantomBatch`,
        for this one image (contrasts in the image's units)
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    boxes: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    axes: np.ndarray
    angles: np.ndarray
    contrasts: np.ndarray

    def __iter__(self):
        return iter((self.image, self.mask, self.boxes))


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------


def _int(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _range(name: str, value, *, lo=None, hi=None, integer=False, hint="") -> tuple:
    """A scalar ``v`` (meaning ``(v, v)``) or a ``(min, max)`` pair, validated."""
    if np.ndim(value) == 0:
        pair = (value, value)
    else:
        pair = tuple(np.asarray(value).tolist())
        if len(pair) != 2:
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold numbers, got {value!r}")
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if integer and int(v) != v:
            raise ValueError(f"{name} must hold integers, got {value!r}")
    a, b = pair
    if a > b:
        raise ValueError(f"{name}=({a}, {b}) is reversed: give it as (min, max) = ({b}, {a})")
    if lo is not None and a < lo:
        raise ValueError(f"{name}={value!r} is below the minimum {lo}{hint}")
    if hi is not None and b > hi:
        raise ValueError(f"{name}={value!r} is above the maximum {hi}{hint}")
    return (int(a), int(b)) if integer else (float(a), float(b))


def _nonneg(name: str, value) -> float:
    """``value`` as a finite float >= 0, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _seed(value) -> int:
    """The seed as a non-negative int (None or a Generator would break reproducibility)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"seed must be an integer (for reproducibility), got {value!r}; pass e.g. seed=0")
    if value < 0:
        raise ValueError(f"seed must be >= 0, got {value}")
    return int(value)


def _size(value) -> tuple[int, int]:
    """``size`` (an int or an (H, W) pair, each >= 16) as ``(H, W)``."""
    if np.ndim(value) == 0:
        h = w = _int("size", value, 16)
    else:
        pair = tuple(value)
        if len(pair) != 2:
            raise ValueError(f"size must be an int or a (height, width) pair, got {value!r}")
        h, w = (_int("size", v, 16) for v in pair)
    return h, w


def _lesion_shape_args(radius, aspect, softness, shape, margin, min_distance):
    """Validate the lesion shape arguments against an image shape ``(H, W)``."""
    r = _range("radius", radius, lo=1.0, hint=" pixels; lesions need radius >= 1")
    asp = _range("aspect", aspect, lo=1.0, hi=4.0, hint=" (a/b ratio of the ellipse axes; use 1 for discs)")
    if r[0] / math.sqrt(asp[1]) < 0.75:
        raise ValueError(
            f"radius={radius!r} with aspect={aspect!r} gives semi-minor axes below 0.75 pixel, which "
            "may fall between pixel centres: raise the minimum radius or lower the maximum aspect"
        )
    soft = _nonneg("softness", softness)
    margin = _nonneg("margin", margin)
    min_distance = _nonneg("min_distance", min_distance)
    a_max = r[1] * math.sqrt(asp[1])
    limit = min(shape) / 4 - margin - 1
    if a_max > limit:
        raise ValueError(
            f"radius={radius!r} (aspect {aspect!r}) is too large for a {shape[0]}x{shape[1]} image: the longest "
            f"semi-axis would be {a_max:.1f} px but must be <= {max(limit, 0):.1f} px (size/4 - margin - 1); "
            "reduce radius or aspect, or increase the image size"
        )
    return r, asp, soft, margin, min_distance


# ---------------------------------------------------------------------------
# drawing helpers
# ---------------------------------------------------------------------------


def _smoothstep(t):
    """``3t^2 - 2t^3`` of ``t`` clipped to [0, 1]: 0 -> 0, 1 -> 1, flat at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _aa(d):
    """Anti-aliased indicator from a signed distance in pixels (positive inside)."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _window(shape, cx, cy, reach):
    """Slices of the part of an image within ``reach`` pixels (plus one) of ``(cx, cy)``."""
    h, w = shape
    y0, y1 = min(max(int(cy - reach) - 1, 0), h), max(min(int(cy + reach) + 2, h), 0)
    x0, x1 = min(max(int(cx - reach) - 1, 0), w), max(min(int(cx + reach) + 2, w), 0)
    return slice(y0, y1), slice(x0, x1)


def _polar_ellipse(xx, yy, cx, cy, ax, ay, angle, wobble=()):
    """Distance in pixels along the ray from the centre to a (wobbly) ellipse's edge; positive inside.

    The edge is at radius ``R(phi) * (1 + sum_k amp_k cos(k phi + ph_k))``, k = 2, 3, ...,
    ``R(phi)`` the ellipse's radius in direction ``phi`` (computed without arctan).
    """
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = dx * c + dy * s
    v = -dx * s + dy * c
    r = np.sqrt(u * u + v * v)
    den = np.sqrt((ay * u) ** 2 + (ax * v) ** 2)
    pos = den > 0
    radius = np.where(pos, ax * ay * r / np.where(pos, den, 1.0), min(ax, ay))
    if wobble:
        rs = np.where(pos, r, 1.0)
        c1, s1 = np.where(pos, u / rs, 1.0), v / rs  # cos(phi), sin(phi)
        ck, sk = c1 * c1 - s1 * s1, 2 * c1 * s1  # k = 2
        scale = np.ones_like(r)
        for amp, ph in wobble:
            scale += amp * (ck * math.cos(ph) - sk * math.sin(ph))
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        radius = radius * scale
    return radius - r


def _ellipse_layer(shape, cx, cy, a, b, angle, softness):
    """Window slices, boolean support and profile ``p`` of one lesion (see the module docstring)."""
    h, w = shape
    x0, x1 = max(int(math.floor(cx - a)) - 1, 0), min(int(math.ceil(cx + a)) + 2, w)
    y0, y1 = max(int(math.floor(cy - a)) - 1, 0), min(int(math.ceil(cy + a)) + 2, h)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xs - cx, ys - cy
    u = dx * c + dy * s
    v = -dx * s + dy * c
    q = (u / a) ** 2 + (v / b) ** 2
    inside = q <= 1.0
    if softness > 0:
        rho = np.sqrt(q)
        g = np.hypot(u / a**2, v / b**2)  # |grad rho| * rho
        safe = g > 0
        d = np.full_like(q, b)
        d[safe] = (1.0 - rho[safe]) * rho[safe] / g[safe]
        p = _smoothstep((d + 0.5) / softness)
    else:
        p = np.ones_like(q)
    p = np.where(inside, p, 0.0)
    return (slice(y0, y1), slice(x0, x1)), inside, p


def _draw_lesion_params(rng, k, r, asp, con):
    """Equivalent radii, semi-axes (a, b), angles and contrasts of ``k`` lesions, largest first."""
    # always four draws of k (uniform(a, a) is exactly a), so the random stream, hence every
    # position and background, does not depend on whether a range is degenerate or on its values
    radii = rng.uniform(r[0], r[1], k)
    aspects = rng.uniform(asp[0], asp[1], k)
    angles = rng.uniform(0.0, math.pi, k)
    contrasts = rng.uniform(con[0], con[1], k)
    order = np.argsort(-radii, kind="stable")  # place (and number) the largest first
    radii, aspects, angles, contrasts = radii[order], aspects[order], angles[order], contrasts[order]
    axes = np.stack([radii * np.sqrt(aspects), radii / np.sqrt(aspects)], axis=1) if k else np.zeros((0, 2))
    return radii, axes, angles, contrasts


def _place(rng, levels, axes, margin, min_distance):
    """Centres for lesions with semi-axes ``axes`` (placed in this order), or None if they do not fit.

    ``levels`` is a list of ``(dist, allowed)`` pairs tried in turn for each
    lesion: ``dist`` is the distance (pixels) from each pixel centre to the
    nearest forbidden pixel centre.  A centre is admissible where ``allowed``
    and ``dist >= a + margin + 0.75`` (0.75 > 0.71 covers the sub-pixel
    jitter), and at least ``a_i + a_j + min_distance + 0.75`` from every lesion
    placed before; it is drawn uniformly among the admissible pixels, plus a
    uniform sub-pixel jitter.
    """
    centres = []
    for a, _ in axes:
        for dist, allowed in levels:
            ys, xs = np.nonzero(allowed & (dist >= a + margin + 0.75))
            if centres and len(xs):
                c = np.asarray(centres)
                need = axes[: len(centres), 0] + a + min_distance + 0.75
                d2 = (xs[:, None] - c[None, :, 0]) ** 2 + (ys[:, None] - c[None, :, 1]) ** 2
                keep = np.all(d2 >= need[None, :] ** 2, axis=1)
                xs, ys = xs[keep], ys[keep]
            if len(xs):
                break
        else:
            return None
        j = rng.integers(len(xs))
        jitter = rng.uniform(-0.5, 0.5, 2)
        centres.append((xs[j] + jitter[0], ys[j] + jitter[1]))
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def _place_in_anatomy(rng, cls, axes, margin, min_distance):
    """Place lesions in the abdominal cavity, or return None if they cannot fit.

    Each lesion goes inside one tissue (soft tissue or one organ, ``margin`` px
    from any other) if the random greedy placement finds room, else anywhere in
    the cavity (soft tissue, organs, visceral fat), still ``margin`` px from the
    body wall, bone, psoas and great vessels.
    """
    tissue = (cls == _C_PARENCHYMA) | (cls >= _C_ORGAN)
    cavity = tissue | (cls == _C_FAT)
    strict = (_class_distance(cls), tissue)
    relaxed = (ndimage.distance_transform_edt(np.pad(cavity, 1))[1:-1, 1:-1], cavity)
    for levels in ([strict], [strict, relaxed]):
        for _try in range(_PLACE_TRIES):
            centres = _place(rng, levels, axes, margin, min_distance)
            if centres is not None:
                return centres
    return None


def _sites(cls, inst, k):
    """Name of the tissue under each lesion ("mixed" if it overlaps an organ's edge)."""
    names = []
    for j in range(1, k + 1):
        under = np.unique(cls[inst == j])
        names.append(_SITE_NAMES.get(int(under[0]), "mixed") if len(under) == 1 else "mixed")
    return np.array(names, dtype="<U11")


def _render(shape, centres, axes, angles, contrasts, softness):
    """Lesion intensity layer, instance map, and exact boxes."""
    layer = np.zeros(shape, np.float64)
    inst = np.zeros(shape, np.int32)
    boxes = np.zeros((len(centres), 4), np.int64)
    for j, ((cx, cy), (a, b), ang, con) in enumerate(zip(centres, axes, angles, contrasts)):
        win, inside, p = _ellipse_layer(shape, cx, cy, a, b, ang, softness)
        layer[win] += con * p
        inst[win][inside] = j + 1
        rows, cols = np.nonzero(inside)
        boxes[j] = (
            win[1].start + cols.min(),
            win[0].start + rows.min(),
            win[1].start + cols.max() + 1,
            win[0].start + rows.max() + 1,
        )
    return layer, inst, boxes


def _texture_filter(shape):
    """Fourier filter giving unit-variance tissue texture at several scales (periodic)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f2 = fx**2 + fy**2
    s = min(h, w)
    filt = np.zeros_like(f2)
    for sigma, weight in ((s / 8, 0.6), (s / 20, 0.5), (s / 48, 0.35)):
        filt += weight * np.exp(-2.0 * math.pi**2 * sigma**2 * f2)
    filt /= np.sqrt(np.mean(filt**2))  # white noise of variance 1 -> field of variance 1
    return filt[:, : w // 2 + 1]


def _curve_points(rng, p0, p2, n_per_px=2.0):
    """Points along a random quadratic Bezier from p0 to p2, spaced about 1/n_per_px pixel."""
    p0, p2 = np.asarray(p0, float), np.asarray(p2, float)
    mid = (p0 + p2) / 2
    length = float(np.hypot(*(p2 - p0)))
    normal = np.array([-(p2 - p0)[1], (p2 - p0)[0]]) / max(length, 1e-9)
    p1 = mid + normal * rng.uniform(-0.5, 0.5) * length
    m = max(int(length * n_per_px * 1.3), 2)
    t = np.linspace(0, 1, m)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    step = np.hypot(*np.diff(pts, axis=0).T).mean() if m > 1 else 1.0
    return pts, step


def _anatomy(rng, shape, texture_field, texture, structures):
    """Abdominal-CT-like anatomy without bowel and vessels (drawn after the lesions, around them).

    Returns a state dict with the tissue image (unclipped intensity units), the
    tissue classes (0 air, 1 soft tissue, 3 excluded: body wall, bone, psoas,
    great vessels; 4 visceral fat; 10 + j organ j) and the body mask.  Image
    left is the patient's right (radiological convention): the liver is on the left.
    """
    h, w = shape
    s = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # float32 suffices for the background (speed)
    u01 = rng.uniform

    # body outline: a wobbly ellipse, wider than deep, on air
    cx = w / 2 + u01(-0.03, 0.03) * w
    cy = h / 2 + u01(-0.03, 0.03) * h
    ax = u01(0.41, 0.47) * w
    ay = u01(0.32, 0.39) * h
    tilt = u01(-0.08, 0.08)
    wobble = [(u01(0, 0.02), u01(0, 2 * math.pi)) for _ in range(4)]
    d_body = _polar_ellipse(xx, yy, cx, cy, ax, ay, tilt, wobble)
    body = d_body >= 0

    # body wall: subcutaneous fat, then muscle, then the abdominal cavity
    t_fat = u01(0.02, 0.045) * s
    t_mus = u01(0.015, 0.03) * s
    s1 = _smoothstep((d_body - t_fat) / 1.5 + 0.5)
    s2 = _smoothstep((d_body - t_fat - t_mus) / 1.5 + 0.5)
    tex = texture * texture_field
    tissue = _FAT + (_MUSCLE - _FAT) * s1 + (_TISSUE - _MUSCLE) * s2 + tex * (0.4 + 0.6 * s2)

    cls = np.where(body, _C_EXCLUDED, _C_AIR).astype(np.int8)
    interior = d_body > t_fat + t_mus + 1.0
    cls[interior] = _C_PARENCHYMA
    state = dict(tissue=tissue, cls=cls, body=body, d_body=d_body, structures=structures)
    if not structures:
        return state

    iax, iay = ax - t_fat - t_mus, ay - t_fat - t_mus
    c_t, s_t = math.cos(tilt), math.sin(tilt)

    def at(u, v):  # body frame (u: image right, v: posterior; fractions of the cavity) -> image
        u, v = u * iax, v * iay
        return cx + u * c_t - v * s_t, cy + u * s_t + v * c_t

    excluded = np.zeros(shape, bool)

    # visceral fat: soft patches where an independent low-frequency field is high
    fat_field = np.roll(texture_field, (h // 2, w // 2), axis=(0, 1))
    thr = u01(1.6, 2.0)
    w_fat = _smoothstep((fat_field - thr) / 0.4) * s2
    tissue += (_FAT + 0.4 * tex - tissue) * w_fat
    cls[interior & (fat_field > thr - 0.2)] = _C_FAT

    # organs: centre (u, v), semi-axes (u, v), level above soft tissue, probability of being in the slice
    organs = (
        ((-0.42, -0.12), (0.50, 0.62), 0.06, 0.9),  # liver
        ((0.62, 0.18), (0.20, 0.36), 0.09, 0.7),  # spleen
        ((-0.40, 0.50), (0.14, 0.22), 0.20, 0.75),  # right kidney
        ((0.40, 0.50), (0.14, 0.22), 0.20, 0.75),  # left kidney
    )
    for j, ((ou, ov), (sa, sb), level, prob) in enumerate(organs):
        present = u01() < prob
        jit = u01(-0.06, 0.06, 2)
        scale = u01(0.85, 1.1)
        ang = u01(-0.35, 0.35)
        lev = level + u01(-0.02, 0.02)
        wob = [(u01(0, 0.05), u01(0, 2 * math.pi)) for _ in range(3)]
        if not present:
            continue
        ox, oy = at(ou + jit[0], ov + jit[1])
        oa, ob = sa * iax * scale, sb * iay * scale
        win = _window(shape, ox, oy, max(oa, ob) * (1 + sum(a for a, _ in wob)) + 1)
        d_org = _polar_ellipse(xx[win], yy[win], ox, oy, oa, ob, tilt + ang, wob)
        w_org = _aa(d_org) * s2[win]
        tissue[win] += (_TISSUE + lev + tex[win] - tissue[win]) * w_org
        inside = (d_org >= 0) & interior[win]
        cls[win][inside] = _C_ORGAN + j
        excluded[win][inside] = False

    # spine: vertebral body (cortical rim, marrow) and spinous process, flanked by psoas muscles
    sx, sy = at(u01(-0.03, 0.03), 0.70)
    sr = u01(0.05, 0.065) * s
    ar = sr * u01(0.45, 0.6)
    vr = ar * u01(0.8, 1.1)
    aorta = (sx + sr * u01(0.4, 0.8), sy - sr - ar - u01(0.5, 2.0))
    ivc = (sx - sr * u01(0.6, 1.1), sy - sr - vr - u01(1.0, 3.0))
    win = _window(shape, sx, sy + 0.5 * sr, 3.5 * sr)
    X, Y, T = xx[win], yy[win], tex[win]
    sub = tissue[win]  # a view: updates land in tissue
    bone = np.zeros(X.shape)
    for bx, by, ba, bb in ((sx, sy, sr, sr * 0.9), (sx, sy + 1.25 * sr, 0.25 * sr, 0.6 * sr)):
        d_bone = _polar_ellipse(X, Y, bx, by, ba, bb, tilt)
        w_b = _aa(d_bone)
        sub += (_MARROW + 0.5 * T + (_BONE - _MARROW) * (1 - _smoothstep(d_bone / 1.5)) - sub) * w_b
        bone = np.maximum(bone, w_b)
    ex = bone > 0
    for side in (-1, 1):
        d_ps = _polar_ellipse(X, Y, sx + side * 1.6 * sr, sy - 0.1 * sr, 0.75 * sr, 1.1 * sr, tilt - side * 0.3)
        sub += (_MUSCLE + T - sub) * _aa(d_ps) * (1 - bone)
        ex |= d_ps >= -1.0
    # aorta (on the image's right of the spine) and inferior vena cava
    for (vx, vy), vrad, level in ((aorta, ar, _AORTA), (ivc, vr, _w(130.0))):
        w_v = _aa(vrad - np.sqrt((X - vx) ** 2 + (Y - vy) ** 2))
        sub += (level + 0.3 * T - sub) * w_v
        ex |= w_v > 0
    excluded[win] |= ex

    cls[excluded & body] = _C_EXCLUDED
    state.update(tissue=tissue, s2=s2, tex=tex, at=at, iax=iax, iay=iay, ivc=ivc, xx=xx, yy=yy)
    return state


def _far_from_lesions(points, centres, axes, clearance):
    """Whether every point is at least ``a_j + clearance`` from every lesion centre ``j``."""
    if len(centres) == 0:
        return True
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return bool(np.all(d2 >= (axes[None, :, 0] + clearance) ** 2))


def _finish(rng, state, centres, axes, margin):
    """Add bowel loops and enhanced vessels that keep ``margin`` px from the lesions; compose the image."""
    tissue = state["tissue"]
    if state["structures"]:
        u01, at, tex, s2 = rng.uniform, state["at"], state["tex"], state["s2"]
        xx, yy = state["xx"], state["yy"]
        h, w = tissue.shape
        iax, iay = state["iax"], state["iay"]

        # bowel loops: fluid-filled blobs, some holding a gas pocket
        for _ in range(int(rng.integers(1, 4))):
            bx, by = at(u01(-0.1, 0.6), u01(-0.7, 0.1))
            br = u01(0.06, 0.12) * min(iax, iay)
            elong = u01(1.0, 1.6)
            ang = u01(0, math.pi)
            gas = u01() < 0.5
            wob = [(u01(0, 0.08), u01(0, 2 * math.pi)) for _ in range(3)]
            if not _far_from_lesions(np.array([[bx, by]]), centres, axes, br * elong * 1.3 + margin + 1.0):
                continue
            win = _window(tissue.shape, bx, by, br * elong * 1.3 + 1)
            d_b = _polar_ellipse(xx[win], yy[win], bx, by, br * elong, br, ang, wob)
            w_b = _aa(d_b) * s2[win]
            sub = tissue[win]
            sub += (_w(5.0) + 0.5 * tex[win] - sub) * w_b
            if gas:
                w_g = _aa(br * 0.45 - np.sqrt((xx[win] - bx) ** 2 + (yy[win] - by + 0.3 * br) ** 2))
                sub += (_AIR - sub) * w_g * w_b

        # enhanced vessels: tapering curved tubes (hepatic veins run from the vena cava into the liver)
        dep = np.zeros((h, w))
        sigma = u01(0.7, 1.1)
        vx, vy = state["ivc"]
        for k in range(int(rng.integers(2, 6))):
            if k < 2:
                p0 = np.array([vx, vy]) + u01(-2, 2, 2)
                p2 = np.array(at(u01(-0.85, -0.2), u01(-0.7, 0.2)))
            else:
                p0 = np.array(at(*u01(-0.6, 0.6, 2)))
                heading = u01(0, 2 * math.pi)
                p2 = p0 + u01(0.15, 0.35) * min(iax, iay) * np.array([math.cos(heading), math.sin(heading)])
            pts, step = _curve_points(rng, p0, p2)
            if not _far_from_lesions(pts, centres, axes, margin + 3 * sigma + 1.0):
                continue
            taper = np.linspace(1.0, 0.35, len(pts))
            ix = np.clip(np.rint(pts[:, 0]).astype(int), 0, w - 1)
            iy = np.clip(np.rint(pts[:, 1]).astype(int), 0, h - 1)
            np.add.at(dep, (iy, ix), step * taper)  # line density 1 tapering to 0.35
        vessels = ndimage.gaussian_filter(dep, sigma) * (math.sqrt(2 * math.pi) * sigma)
        tissue += u01(0.3, 0.4) * np.minimum(vessels, 1.0) * s2
    return _AIR + (tissue - _AIR) * _aa(state["d_body"])


def _class_distance(cls):
    """Distance (pixels) from each soft-tissue or organ pixel centre to the nearest pixel of another class.

    Other pixels get 0.  One exact Euclidean distance transform per class, on the class's bounding box.
    """
    dist = np.zeros(cls.shape)
    for c, sl in enumerate(ndimage.find_objects(cls.astype(np.int32)), start=1):
        if sl is None or not (c == _C_PARENCHYMA or c >= _C_ORGAN):
            continue
        m = cls[sl] == c
        d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        dist[sl][m] = d[m]
    return dist


def _add_noise(rng, clean, noise, model):
    """Acquisition noise of standard deviation ``noise``: additive Gaussian, or Rician magnitude."""
    if noise == 0:
        return clean
    if model == "gaussian":
        return clean + noise * rng.standard_normal(clean.shape)
    signal = np.maximum(clean, 0.0)  # magnitude image: air has no signal, shows a Rayleigh floor
    n = rng.standard_normal((2,) + clean.shape)
    return np.hypot(signal + noise * n[0], noise * n[1])


# ---------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------


def _generate(
    n,
    counts_fn,
    params,
    *,
    size,
    radius,
    contrast,
    noise,
    seed,
    softness,
    aspect,
    min_distance,
    margin,
    noise_model,
    texture,
    structures,
):
    """Shared engine of the generators; ``counts_fn(i, rng_i)`` gives image i's lesion count.

    ``params`` holds what only the calling generator knows (its kind and lesion counts); every other
    argument is one of the public generators' keyword arguments, passed by name (so that two of
    them can never be swapped by position).
    """
    h, w = _size(size)
    r, asp, soft, margin, min_distance = _lesion_shape_args(radius, aspect, softness, (h, w), margin, min_distance)
    con = _range("contrast", contrast, lo=-1.0, hi=1.0, hint=" (intensity units of the [0, 1] image)")
    noise = _nonneg("noise", noise)
    texture = _nonneg("texture", texture)
    if noise_model not in ("gaussian", "rician"):
        raise ValueError(f"noise_model must be 'gaussian' (CT-like) or 'rician' (MR magnitude), got {noise_model!r}")
    seed = _seed(seed)

    rngs = np.random.default_rng(seed).spawn(n) if n else []
    counts = [counts_fn(i, rngs[i]) for i in range(n)]
    white = np.stack([g.standard_normal((h, w)) for g in rngs]) if n else np.zeros((0, h, w))
    fields = scipy.fft.irfft2(scipy.fft.rfft2(white) * _texture_filter((h, w)), s=(h, w)) if n else white
    fields = fields.astype(np.float32)

    images = np.empty((n, h, w), np.float32)
    instances = np.zeros((n, h, w), np.int32)
    body_all = np.zeros((n, h, w), np.uint8)
    out = {k: [] for k in ("boxes", "centers", "radii", "axes", "angles", "contrasts", "sites")}
    for i, g in enumerate(rngs):
        k = counts[i]
        radii, axes, angles, contrasts = _draw_lesion_params(g, k, r, asp, con)
        # the anatomy does not depend on the lesions (no label leak); it is redrawn only if the
        # lesions cannot fit in its cavity at all (extreme requests)
        for _attempt in range(_MAX_ATTEMPTS):
            state = _anatomy(g, (h, w), fields[i], texture, structures)
            if k == 0:
                centres = np.zeros((0, 2))
                break
            centres = _place_in_anatomy(g, state["cls"], axes, margin, min_distance)
            if centres is not None:
                break
        else:
            raise ValueError(
                f"could not place {k} lesions of radius up to {r[1]} px (aspect up to {asp[1]}) in a "
                f"{h}x{w} phantom ({_MAX_ATTEMPTS} backgrounds tried): reduce n_lesions, radius, aspect, "
                "min_distance or margin, or increase size"
            )
        clean = _finish(g, state, centres, axes, margin)
        body = state["body"]
        layer, inst, boxes = _render((h, w), centres, axes, angles, contrasts, soft)
        img = _add_noise(g, clean + layer, noise, noise_model)
        images[i] = np.clip(img, 0.0, 1.0)
        instances[i] = inst
        body_all[i] = body
        sites = _sites(state["cls"], inst, k)
        for key, val in zip(out, (boxes, centres, radii, axes, angles, contrasts, sites)):
            out[key].append(val)

    masks = (instances > 0).astype(np.uint8)
    labels = np.array([int(c > 0) for c in counts], dtype=np.int64)
    params = dict(
        params,
        size=(h, w),
        radius=r,
        contrast=con,
        noise=noise,
        seed=seed,
        softness=soft,
        aspect=asp,
        min_distance=min_distance,
        margin=margin,
        noise_model=noise_model,
        texture=texture,
        structures=bool(structures),
        hu_window=HU_WINDOW,
    )
    return PhantomBatch(
        images=images, masks=masks, instances=instances, body=body_all, labels=labels, params=params, **out
    )


def make_lesion_phantoms(
    n: int,
    size=128,
    n_lesions=(0, 3),
    radius=(3, 10),
    contrast=(0.15, 0.4),
    noise: float = 0.03,
    seed: int = 0,
    *,
    softness: float = 1.0,
    aspect=(1.0, 1.3),
    min_distance: float = 3.0,
    margin: float = 3.0,
    noise_model: str = "gaussian",
    texture: float = 0.025,
    structures: bool = True,
) -> PhantomBatch:
    """CT-like axial phantoms with 0..k elliptical lesions each, and their exact ground truth.

    Each image is an axial abdominal-CT-like slice: a body outline on air
    (subcutaneous fat, muscle), a cavity of soft tissue with multi-scale
    texture and patches of visceral fat, organs (liver, spleen, kidneys as
    smooth blobs), the spine with psoas muscles, the aorta and vena cava, bowel
    loops (some with gas) and enhanced vessels, plus acquisition noise.  The
    anatomy is drawn independently of the lesions (so it carries no
    information about the labels); bowel and vessels are then routed around
    the lesions.

    Placement: each lesion's centre is drawn uniformly among the admissible
    pixels (plus a sub-pixel jitter), larger lesions first.  A lesion lies
    inside one tissue -- the soft tissue or one organ -- at least ``margin``
    pixels from any other tissue, so that a ring of width ``margin`` around it
    is uniform background: the "local background" its contrast refers to
    (``sites`` names that tissue).  Only if that fails (large lesions in small
    images) may it overlap an organ's edge or visceral fat (site ``"mixed"``
    or ``"fat"``); it always stays ``margin`` pixels from the body wall, bone,
    psoas and great vessels, and at least ``min_distance`` pixels from the
    other lesions (edge to edge, measured with the long semi-axes).

    Parameters
    ----------
    n : number of images (>= 0).
    size : image side ``S`` (S x S) or ``(H, W)``; >= 16.
    n_lesions : lesions per image, an int or an inclusive ``(min, max)`` range drawn uniformly
        (0 allowed: ``(0, 3)`` gives a lesion-free image a quarter of the time).
    radius : equivalent radius ``sqrt(a*b)`` in pixels, scalar or ``(min, max)`` drawn uniformly;
        >= 1, and the long semi-axis ``radius * sqrt(aspect)`` at most ``min(H, W)/4 - margin - 1``.
    contrast : additive peak contrast in intensity units (0.1 = 40 HU), scalar or ``(min, max)``,
        within [-1, 1]; negative for hypodense lesions.  Bright lesions in bright organs
        may saturate at 1.
    noise : standard deviation of the acquisition noise (intensity units).
    seed : non-negative int; see *Determinism* in the module docstring.
    softness : width in pixels of the inward soft edge (0 = hard edge); see the module docstring.
    aspect : ratio ``a/b`` of the ellipse's semi-axes, scalar or ``(min, max)`` in [1, 4].
    min_distance : minimum edge-to-edge gap between lesions, pixels.
    margin : minimum gap between a lesion and other tissues (see *Placement*), pixels.
    noise_model : ``"gaussian"`` (CT) or ``"rician"`` (MR magnitude: ``|signal + complex noise|``).
    texture : standard deviation of the tissue texture (0 = flat tissue, for controlled experiments).
    structures : draw organs, spine, aorta and vessels (False: body wall and soft tissue only).

    Returns
    -------
    PhantomBatch
        ``labels[i] == (n_lesions of image i > 0)``; see :class:`PhantomBatch`.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments (the message names the parameter and the fix), or if the
        lesions do not fit in the body.

    Examples
    --------
    >>> b = make_lesion_phantoms(8, size=64, radius=(2, 5), seed=1)
    >>> b.images.shape, b.images.dtype, b.masks.dtype
    ((8, 64, 64), dtype('float32'), dtype('uint8'))
    """
    n = _int("n", n)
    nl = _range("n_lesions", n_lesions, lo=0, integer=True, hint=" (use 0 for lesion-free images)")

    def counts(i, g):
        return int(g.integers(nl[0], nl[1] + 1))

    return _generate(
        n,
        counts,
        dict(kind="lesion", n=n, n_lesions=nl),
        size=size,
        radius=radius,
        contrast=contrast,
        noise=noise,
        seed=seed,
        softness=softness,
        aspect=aspect,
        min_distance=min_distance,
        margin=margin,
        noise_model=noise_model,
        texture=texture,
        structures=structures,
    )


def make_classification_phantoms(
    n: int,
    size=64,
    positive_fraction: float = 0.5,
    n_lesions=1,
    radius=(2, 5),
    contrast=(0.15, 0.4),
    noise: float = 0.03,
    seed: int = 0,
    *,
    softness: float = 1.0,
    aspect=(1.0, 1.3),
    min_distance: float = 3.0,
    margin: float = 3.0,
    noise_model: str = "gaussian",
    texture: float = 0.025,
    structures: bool = True,
) -> PhantomBatch:
    """Phantoms for classification: exactly ``round(n * positive_fraction)`` images hold a lesion.

    Positive images hold ``n_lesions`` lesions (an int >= 1 or an inclusive
    range); the others none.  Which images are positive is a seeded random
    permutation, so ``labels`` is balanced exactly but not sorted.  The target is
    ``batch.labels`` (1 = lesion present); the masks and boxes stay available
    (e.g. to check what a saliency map highlights).  The other arguments are
    those of :func:`make_lesion_phantoms`.  Unlike that function, the first
    ``m`` images do not equal a batch of ``m`` (the permutation depends on ``n``).
    """
    n = _int("n", n)
    if (
        isinstance(positive_fraction, (bool, np.bool_))
        or not isinstance(positive_fraction, (int, float, np.integer, np.floating))
        or not 0 <= positive_fraction <= 1
    ):
        raise ValueError(f"positive_fraction must be a number in [0, 1], got {positive_fraction!r}")
    nl = _range("n_lesions", n_lesions, lo=1, integer=True, hint=" (positive images need >= 1 lesion)")
    n_pos = int(round(n * positive_fraction))
    positive = np.zeros(n, bool)
    positive[np.random.default_rng([_seed(seed), 1]).permutation(n)[:n_pos]] = True

    def counts(i, g):
        k = int(g.integers(nl[0], nl[1] + 1))
        return k if positive[i] else 0

    return _generate(
        n,
        counts,
        dict(kind="classification", n=n, n_lesions=nl, positive_fraction=float(positive_fraction)),
        size=size,
        radius=radius,
        contrast=contrast,
        noise=noise,
        seed=seed,
        softness=softness,
        aspect=aspect,
        min_distance=min_distance,
        margin=margin,
        noise_model=noise_model,
        texture=texture,
        structures=structures,
    )


# ---------------------------------------------------------------------------
# real images
# ---------------------------------------------------------------------------


def insert_nodules(
    image,
    n: int,
    radius=(3, 10),
    contrast=None,
    seed: int = 0,
    region=None,
    *,
    softness: float = 1.0,
    aspect=(1.0, 1.3),
    min_distance: float = 3.0,
    margin: float = 3.0,
) -> InsertedNodules:
    """Paste ``n`` synthetic elliptical nodules into a real 2-D image, with exact masks and boxes.

    The result is ``image + sum_j contrast_j * p_j`` (module docstring), in the
    image's own units: for a CT slice in HU, ``contrast=(300, 600)`` gives
    nodules 300-600 HU above the local background, keeping the slice's own
    noise and texture inside them.  Pixels outside the returned mask are
    *bit-identical* to the input (after conversion to float).

    Parameters
    ----------
    image : 2-D array (any real dtype; e.g. HU from ``utils.imaging``).
    n : number of nodules (>= 0).
    radius, aspect, softness, min_distance : as in :func:`make_lesion_phantoms`.
    contrast : required; scalar or ``(min, max)`` in the image's units.
    seed : non-negative int; same arguments give the same result.
    region : optional boolean (H, W) array, where nodules may lie (e.g. the lungs,
        the brain); every nodule's support stays at least ``margin`` pixels inside it.
        Default: the whole image, ``margin`` pixels from its border.
    margin : pixels between a nodule and the edge of ``region`` (and the image border).

    Returns
    -------
    InsertedNodules
        ``image, mask, boxes = insert_nodules(...)`` unpacks the main three; the object also
        has ``instances``, ``centers``, ``radii``, ``axes``, ``angles``, ``contrasts``.
        ``image`` is float32 (float64 if the input was float64).

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, or if the nodules do not fit in ``region``.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be a 2-D array (one slice), got shape {img.shape}; pass image[k] for a volume")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"image must hold real numbers, got dtype {img.dtype}")
    h, w = img.shape
    n = _int("n", n)
    if contrast is None:
        raise TypeError("contrast is required, in the image's units (e.g. contrast=(300, 600) for HU)")
    con = _range("contrast", contrast)
    seed = _seed(seed)
    r, asp, soft, margin, min_distance = _lesion_shape_args(radius, aspect, softness, (h, w), margin, min_distance)
    if region is None:
        allowed = np.ones((h, w), bool)
    else:
        allowed = np.asarray(region)
        if allowed.shape != (h, w):
            raise ValueError(f"region must have the image's shape {(h, w)}, got {allowed.shape}")
        if allowed.dtype != bool:
            if not np.isin(allowed, (0, 1)).all():
                raise ValueError("region must be a boolean (or 0/1) mask of where nodules may lie")
            allowed = allowed.astype(bool)

    out_dtype = np.float64 if img.dtype == np.float64 else np.float32
    out = img.astype(out_dtype, copy=True)
    g = np.random.default_rng(seed)
    radii, axes, angles, contrasts = _draw_lesion_params(g, n, r, asp, con)
    if n:
        dist = ndimage.distance_transform_edt(np.pad(allowed, 1))[1:-1, 1:-1]  # the border is forbidden
        for _try in range(_PLACE_TRIES):
            centres = _place(g, [(dist, allowed)], axes, margin, min_distance)
            if centres is not None:
                break
        if centres is None:
            raise ValueError(
                f"could not place {n} nodules of radius up to {r[1]} px in the region ({int(allowed.sum())} px): "
                "reduce n, radius, aspect, min_distance or margin, or pass a larger region"
            )
    else:
        centres = np.zeros((0, 2))
    layer, inst, boxes = _render((h, w), centres, axes, angles, contrasts, soft)
    nz = inst > 0
    out[nz] = (out[nz] + layer[nz]).astype(out_dtype)
    return InsertedNodules(
        image=out,
        mask=nz.astype(np.uint8),
        instances=inst,
        boxes=boxes,
        centers=centres,
        radii=radii,
        axes=axes,
        angles=angles,
        contrasts=contrasts,
    )


# ---------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------


def boxes_from_mask(instances):
    """Exact boxes of an instance map, via :func:`scipy.ndimage.find_objects`.

    Parameters
    ----------
    instances : integer array (H, W) or (N, H, W); 0 = background, instances
        numbered 1..k without gaps (e.g. ``scipy.ndimage.label(binary_mask)[0]``).

    Returns
    -------
    int64 (k, 4) array of ``(x0, y0, x1, y1)`` half-open boxes, row ``j`` for
    label ``j + 1`` (``(0, 4)`` if empty); for a stack, a list of such arrays.
    """
    a = np.asarray(instances)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(
            f"instances must be an integer label map, got dtype {a.dtype}; "
            "for a binary mask pass scipy.ndimage.label(mask)[0]"
        )
    if a.ndim == 3:
        return [boxes_from_mask(x) for x in a]
    if a.ndim != 2:
        raise ValueError(f"instances must have shape (H, W) or (N, H, W), got {a.shape}")
    if a.size and a.min() < 0:
        raise ValueError("instances must be >= 0 (0 = background)")
    slices = ndimage.find_objects(a)
    boxes = np.zeros((len(slices), 4), np.int64)
    for j, sl in enumerate(slices):
        if sl is None:
            raise ValueError(
                f"label {j + 1} is absent but label {len(slices)} is present: number instances 1..k "
                "without gaps (skimage.segmentation.relabel_sequential)"
            )
        boxes[j] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return boxes
