"""Exposure-to-reference transformations (paper section 2 and 5.1).

Per chip, each exposure's detections are matched to the reference exposure's (a robust offset
search, then nearest neighbours with scipy's cKDTree) and a general cubic polynomial per
coordinate (10 terms) maps target -> reference, fitted by iterative least squares with 3-sigma
culling on the stars of the chip's central third with 1e-4 <= q <= 1. The inverse polynomial
(reference -> target) is fitted on the same stars. The standard error of the transformation, the
paper's diagnostic, is the rms residual with the fit's degrees of freedom removed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError

N_TERMS = 10  # general cubic: 1, u, v, u2, uv, v2, u3, u2v, uv2, v3
TERMS = ("1", "u", "v", "u2", "uv", "v2", "u3", "u2v", "uv2", "v3")
#: Status codes of a transformation.
STATUS = {"ok": 0, "no_detections": 1, "no_match": 2, "too_few_stars": 3, "missing": 4}


@dataclass(frozen=True)
class TransformParams:
    """reference: reference exposure index. central: fraction of the chip kept (1/3).
    q_min, q_max: quality-of-fit window. max_offset: px searched for the offset; match_radius:
    px for nearest neighbours after the offset; min_stars: fewest stars for a cubic fit.
    min_flux: faintest fitted flux (DN) used; the standard error is an rms over stars, and the
    crowd of faint detections (S/N ~ 5-20) would otherwise dominate it."""

    reference: int = 0
    central: float = 1 / 3
    q_min: float = 1e-4
    q_max: float = 1.0
    max_offset: float = 10.0
    match_radius: float = 0.75
    clip_sigma: float = 3.0
    min_stars: int = 20
    min_flux: float = 500.0

    def __post_init__(self):
        if not 0 < self.central <= 1:
            raise BadArgumentError(f"central fraction must be in (0, 1], got {self.central}")
        if self.max_offset <= 0 or self.match_radius <= 0:
            raise BadArgumentError("max_offset and match_radius must be > 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


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


def select(det: dict, params: TransformParams, size: int = C.CHIP_SIZE) -> np.ndarray:
    """Stars usable for transformations: central region, q window, unflagged, unsaturated."""
    lo = size * (1 - params.central) / 2 - 0.5
    hi = size * (1 + params.central) / 2 - 0.5
    x, y = det["x"], det["y"]
    return ((x >= lo) & (x < hi) & (y >= lo) & (y < hi) & (det["q"] >= params.q_min)
            & (det["q"] <= params.q_max) & (det["flags"] == 0) & ~det["saturated"]
            & (det["flux"] >= params.min_flux))


def read_detections(root, exposure: int, chip: int) -> dict:
    """One (exposure, chip) of the detections group as numpy arrays trimmed to ``count``."""
    g = root[schema.DETECTIONS]
    n = int(g["count"][exposure, chip])
    return {k: np.asarray(g[k][exposure, chip, :n]) for k in ("x", "y", "q", "flags", "saturated", "mag", "flux")}


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


def solve_exposure(root, exposure: int, chip: int, params: TransformParams) -> dict:
    """Transformation of one (exposure, chip) into the reference exposure."""
    out = {"coef_x": np.full(N_TERMS, np.nan), "coef_y": np.full(N_TERMS, np.nan),
           "inv_x": np.full(N_TERMS, np.nan), "inv_y": np.full(N_TERMS, np.nan),
           "std_err_x": np.nan, "std_err_y": np.nan, "n_stars": 0,
           "offset_x": np.nan, "offset_y": np.nan, "status": STATUS["missing"]}
    if not (root[f"{schema.DETECTIONS}/done"][exposure, chip] and
            root[f"{schema.DETECTIONS}/done"][params.reference, chip]):
        return out
    ref = read_detections(root, params.reference, chip)
    tgt = read_detections(root, exposure, chip)
    i_ref, i_tgt, status = match(ref, tgt, params)
    out["status"] = status
    if status != STATUS["ok"]:
        return out
    x, y = tgt["x"][i_tgt], tgt["y"][i_tgt]
    X, Y = ref["x"][i_ref], ref["y"][i_ref]
    cx, cy, used, sx, sy = fit_cubic(x, y, X, Y, params.clip_sigma, min_stars=params.min_stars)
    if not np.isfinite(sx):
        out["status"] = STATUS["too_few_stars"]
        out["n_stars"] = int(used.sum())
        return out
    ix, iy, *_ = fit_cubic(X[used], Y[used], x[used], y[used], params.clip_sigma, max_iter=1,
                           min_stars=params.min_stars)
    c = (C.CHIP_SIZE - 1) / 2
    ox, oy = apply(cx, cy, np.array([c]), np.array([c]))
    out.update(coef_x=cx, coef_y=cy, inv_x=ix, inv_y=iy, std_err_x=sx, std_err_y=sy,
               n_stars=int(used.sum()), offset_x=float(ox[0] - c), offset_y=float(oy[0] - c))
    return out


def offset_phase(offset) -> np.ndarray:
    """The paper's offset phase phi in [0, 1): fractional part of the offset (px)."""
    return np.mod(np.asarray(offset, float), 1.0)


def compute_transforms(store, params: TransformParams | None = None, progress: bool = True):
    """Solve every (exposure, chip) transformation lazily with dask and write the
    ``transforms`` group. Small output: computed in full, written once."""
    import dask
    import xarray as xr
    import zarr

    params = params or TransformParams()
    path = st.store_path(store)
    if not st.has_group(path, schema.DETECTIONS):
        raise StoreMismatchError(path, "has no detections: run `starcenter detect` first")
    det = st.open_group(path, schema.DETECTIONS)
    ne, nc = det.sizes[schema.EXPOSURE], det.sizes[schema.CHIP]
    if not 0 <= params.reference < ne:
        raise BadArgumentError(f"reference exposure {params.reference} not in 0..{ne - 1}")

    def task(e, c):
        return solve_exposure(zarr.open_group(path, mode="r"), e, c, params)

    tasks = [dask.delayed(task)(e, c) for e in range(ne) for c in range(nc)]
    results = st.run_tasks(tasks, f"transforms {path}", progress)
    res = {k: np.array([r[k] for r in results]).reshape((ne, nc) + np.shape(results[0][k]))
           for k in results[0]}
    chips = det[schema.CHIP].values
    dims2 = (schema.EXPOSURE, schema.CHIP)
    ds = xr.Dataset(
        {
            "coef_x": (dims2 + ("term",), res["coef_x"], {"description": "target -> reference x, cubic in u, v"}),
            "coef_y": (dims2 + ("term",), res["coef_y"], {}),
            "inv_x": (dims2 + ("term",), res["inv_x"], {"description": "reference -> target x"}),
            "inv_y": (dims2 + ("term",), res["inv_y"], {}),
            "std_err_x": (dims2, res["std_err_x"], {"units": "px", "description": "standard error of the transformation"}),
            "std_err_y": (dims2, res["std_err_y"], {"units": "px"}),
            "n_stars": (dims2, res["n_stars"].astype(np.int32), {}),
            "offset_x": (dims2, res["offset_x"], {"units": "px", "description": "reference - target at the chip centre"}),
            "offset_y": (dims2, res["offset_y"], {"units": "px"}),
            "status": (dims2, res["status"].astype(np.int8), {"flag_values": list(STATUS.values()),
                                                               "flag_meanings": " ".join(STATUS)}),
        },
        coords={schema.EXPOSURE: det[schema.EXPOSURE].values, schema.CHIP: chips,
                "term": np.array(TERMS, dtype=object)},
        attrs={"params": params.to_json(), "normalization": "u, v = (x, y - 399.5) / 399.5",
               "detections_params": det.attrs.get("params", "")},
    )
    st.write_dataset(path, schema.TRANSFORMS, ds)
    bad = ds["status"].values != 0
    for e, c in zip(*np.nonzero(bad)):
        name = [k for k, v in STATUS.items() if v == ds["status"].values[e, c]][0]
        print(f"transforms: exposure {e} chip {chips[c]}: {name.replace('_', ' ')}; flagged and skipped")
    return ds
