"""Cubic transformations between exposures (paper section 2 and 5.1), on arrays.

A general cubic polynomial per coordinate (10 terms) in normalized chip coordinates, fitted by
iterative least squares with 3-sigma culling; a robust offset search and nearest-neighbour
matching (scipy cKDTree); the offset phase; the catalog projection back into each exposure.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import constants as C
from starcenter.cubes.params import TransformParams

N_TERMS = 10  # general cubic: 1, u, v, u2, uv, v2, u3, u2v, uv2, v3


TERMS = ("1", "u", "v", "u2", "uv", "v2", "u3", "u2v", "uv2", "v3")


#: Status codes of a transformation.
STATUS = {"ok": 0, "no_detections": 1, "no_match": 2, "too_few_stars": 3, "missing": 4}


def design(x, y, size: float = C.CHIP_SIZE) -> np.ndarray:
    """Cubic design matrix (n, 10) in normalized coordinates u, v = (x, y - centre) / centre."""
    c = (size - 1) / 2
    u, v = (np.asarray(x, float) - c) / c, (np.asarray(y, float) - c) / c
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v, u**3, u * u * v, u * v * v, v**3], axis=-1)


def apply(coef_x, coef_y, x, y):
    """Apply a cubic transformation (coefficients from :func:`fit_cubic`) to positions (px)."""
    A = design(x, y)
    return A @ coef_x, A @ coef_y


def fit_cubic(x, y, X, Y, clip_sigma: float = 3.0, max_iter: int = 10, min_stars: int = 20,
              weights=None):
    """Fit X = P(x, y), Y = Q(x, y) (cubic) with iterative 3-sigma culling of stars.

    weights : optional per-star weights (1 / variance, px^-2 up to a common factor); the culling
        then works on weighted residuals.
    Returns (coef_x, coef_y, used mask, standard error x, standard error y) in px; the standard
    error is sqrt(sum r^2 / (n - 10)) per coordinate (weighted: sum w r^2 / mean w over the
    used stars, so it stays in px).
    """
    used = np.ones(x.size, bool)
    w = np.ones(x.size) if weights is None else np.asarray(weights, float)
    sw = np.sqrt(w)
    cx = cy = np.full(N_TERMS, np.nan)
    sx = sy = np.nan
    for _ in range(max_iter):
        if used.sum() < max(min_stars, N_TERMS + 1):
            return np.full(N_TERMS, np.nan), np.full(N_TERMS, np.nan), used, np.nan, np.nan
        A = design(x[used], y[used]) * sw[used, None]
        cx = np.linalg.lstsq(A, X[used] * sw[used], rcond=None)[0]
        cy = np.linalg.lstsq(A, Y[used] * sw[used], rcond=None)[0]
        Afull = design(x, y)
        rx, ry = (X - Afull @ cx) * sw, (Y - Afull @ cy) * sw
        dof = used.sum() - N_TERMS
        wm = np.mean(w[used])
        sx = np.sqrt(np.sum(rx[used] ** 2) / dof / wm)
        sy = np.sqrt(np.sum(ry[used] ** 2) / dof / wm)
        new = (np.abs(rx) <= clip_sigma * sx * np.sqrt(wm)) & (np.abs(ry) <= clip_sigma * sy * np.sqrt(wm))
        if np.array_equal(new, used):
            break
        used = new
    return cx, cy, used, sx, sy


def find_offset(ref_xy, tgt_xy, max_offset: float, bin_px: float = 0.5):
    """Robust offset (ref - target, px) from the histogram of all pair differences within
    ``max_offset``; refined as the median difference of pairs within one bin of the peak.
    Returns None when no pair is found."""
    if len(ref_xy) == 0 or len(tgt_xy) == 0:
        return None
    tree = cKDTree(ref_xy)
    pairs = tree.query_ball_point(tgt_xy, max_offset)
    ti = np.repeat(np.arange(len(tgt_xy)), [len(p) for p in pairs])
    if ti.size == 0:
        return None
    ri = np.concatenate([np.asarray(p, int) for p in pairs])
    d = ref_xy[ri] - tgt_xy[ti]
    nb = int(np.ceil(2 * max_offset / bin_px))
    h, ex, ey = np.histogram2d(d[:, 0], d[:, 1], bins=nb, range=[[-max_offset, max_offset]] * 2)
    i, j = np.unravel_index(np.argmax(h), h.shape)
    peak = np.array([0.5 * (ex[i] + ex[i + 1]), 0.5 * (ey[j] + ey[j + 1])])
    near = np.all(np.abs(d - peak) <= bin_px, axis=1)
    if near.sum() < 3:
        return None
    return np.median(d[near], axis=0)


def select(det: dict, params: TransformParams, size: int = C.CHIP_SIZE, min_flux: float | None = None) -> np.ndarray:
    """Stars usable for transformations: central region, q window, unflagged, unsaturated, at
    least ``min_flux`` DN (default params.min_flux)."""
    lo = size * (1 - params.central) / 2 - 0.5
    hi = size * (1 + params.central) / 2 - 0.5
    x, y = det["x"], det["y"]
    return ((x >= lo) & (x < hi) & (y >= lo) & (y < hi) & (det["q"] >= params.q_min)
            & (det["q"] <= params.q_max) & (det["flags"] == 0) & ~det["saturated"]
            & (det["flux"] >= (params.min_flux if min_flux is None else min_flux)))


def match(ref: dict, tgt: dict, params: TransformParams):
    """Indices (i_ref, i_tgt) of matched stars and the offset used, or (None, None, status)."""
    rs, ts = select(ref, params), select(tgt, params)
    if rs.sum() == 0 or ts.sum() == 0:
        return None, None, STATUS["no_detections"]
    rxy = np.c_[ref["x"], ref["y"]][rs]
    txy = np.c_[tgt["x"], tgt["y"]][ts]
    # offset search on the brighter half keeps the pair count (and time) bounded
    rb = np.argsort(ref["mag"][rs])[: 400]
    tb = np.argsort(tgt["mag"][ts])[: 400]
    off = find_offset(rxy[rb], txy[tb], params.max_offset)
    if off is None:
        return None, None, STATUS["no_match"]
    d, j = cKDTree(rxy).query(txy + off, distance_upper_bound=params.match_radius)
    ok = np.isfinite(d)
    i_ref = np.flatnonzero(rs)[j[ok]]
    i_tgt = np.flatnonzero(ts)[ok]
    # one target per reference star
    _, first = np.unique(i_ref, return_index=True)
    return i_ref[first], i_tgt[first], STATUS["ok"]


def offset_phase(offset) -> np.ndarray:
    """The paper's offset phase phi in [0, 1): fractional part of the offset (px)."""
    return np.mod(np.asarray(offset, float), 1.0)


#: Smallest catalog rms (px) used in the projection weights (a star measured identically
#: everywhere must not take all the weight).
RMS_FLOOR = 1e-3


def project_catalog(mean, rms, native, good, usable, min_stars: int = 20):
    """Project one chip's catalog into every exposure (the paper's truth).

    mean, rms : (star, 2) px, catalog positions and scatter; native : (exposure, star, 2) px, each
    exposure's own measures of the catalog stars; good : (star,) stars to use and project;
    usable : (exposure,) exposures with a valid transformation. Per exposure, a cubic from the
    catalog to the exposure's measures is fitted with weights 1 / mean(rms^2) and 3-sigma culling
    (:func:`cubes.transforms.fit_cubic`) and applied to the good stars' mean positions. Returns
    truth (exposure, star, 2) px (NaN where not projected) and the coefficients (2, exposure, 10).
    """
    ne, nstar = native.shape[:2]
    truth = np.full((ne, nstar, 2), np.nan)
    coef = np.full((2, ne, N_TERMS), np.nan)
    good = good & np.all(np.isfinite(mean), axis=1) & np.all(np.isfinite(rms), axis=1)
    w = 1.0 / np.maximum(np.mean(np.where(np.isfinite(rms), rms, np.inf) ** 2, axis=1), RMS_FLOOR ** 2)
    for e in np.flatnonzero(usable):
        fit = good & np.all(np.isfinite(native[e]), axis=1)
        if fit.sum() < max(min_stars, N_TERMS + 1):
            continue
        cx, cy, *_ = fit_cubic(mean[fit, 0], mean[fit, 1], native[e, fit, 0], native[e, fit, 1],
                               weights=w[fit], min_stars=min_stars)
        if not (np.all(np.isfinite(cx)) and np.all(np.isfinite(cy))):
            continue
        coef[0, e], coef[1, e] = cx, cy
        tx, ty = apply(cx, cy, mean[good, 0], mean[good, 1])
        truth[e, good, 0], truth[e, good, 1] = tx, ty
    return truth, coef


def tie_to_reference(xy: np.ndarray, reference: int, min_stars: int = 20, sigma: np.ndarray | None = None):
    """Carry every exposure's positions ``xy`` (exposure, star, 2) px into the reference
    exposure's system with a cubic fit (3-sigma culling) on the stars measured in both; NaN for
    exposures with fewer than ``min_stars`` such stars. ``sigma`` (exposure, star, 2) px: each
    star weighted by 1 / (its variance here + in the reference), mean over the axes."""
    moved = np.full(xy.shape, np.nan)
    in_ref = np.all(np.isfinite(xy[reference]), axis=1)
    var = None if sigma is None else np.mean(np.asarray(sigma, float) ** 2, axis=-1)
    for e in range(xy.shape[0]):
        fin = np.all(np.isfinite(xy[e]), axis=1)
        ok = fin & in_ref
        if var is not None:
            ok &= np.isfinite(var[e] + var[reference]) & (var[e] + var[reference] > 0)
        if ok.sum() < min_stars:
            continue
        w = None if var is None else 1.0 / (var[e, ok] + var[reference, ok])
        cx, cy, *_ = fit_cubic(xy[e, ok, 0], xy[e, ok, 1], xy[reference, ok, 0], xy[reference, ok, 1],
                               weights=w)
        if not np.all(np.isfinite(cx)):
            continue
        moved[e, fin] = np.stack(apply(cx, cy, xy[e, fin, 0], xy[e, fin, 1]), axis=-1)
    return moved
