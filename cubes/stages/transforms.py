"""Exposure-to-reference transformations (paper section 2 and 5.1).

Per chip, each exposure's detections are matched to the reference exposure's (a robust offset
search, then nearest neighbours with scipy's cKDTree) and a general cubic polynomial per
coordinate (10 terms) maps target -> reference, fitted by iterative least squares with 3-sigma
culling on the stars of the chip's central third with 1e-4 <= q <= 1. The inverse polynomial
(reference -> target) is fitted on the same stars. The standard error of the transformation, the
paper's diagnostic, is the rms residual with the fit's degrees of freedom removed.

With ``weights="inverse-variance"`` the fit is redone with each star weighted by
1 / sigma_eff^2 of its position difference: the two detections' Fisher variances through the
error model (scale, floor) fitted to the unweighted fit's residuals (classical.stats.error_model),
stored as ``error_scale`` and ``error_floor``; the standard error is then the weighted rms
residual (for a star of the mean weight).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.transforms import N_TERMS, STATUS, TERMS, apply, fit_cubic, match
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.lookup import read_detections
from starcenter.cubes.params import TransformParams


def solve_exposure(root, exposure: int, chip: int, params: TransformParams) -> dict:
    """Transformation of one (exposure, chip) into the reference exposure."""
    out = {"coef_x": np.full(N_TERMS, np.nan), "coef_y": np.full(N_TERMS, np.nan),
           "inv_x": np.full(N_TERMS, np.nan), "inv_y": np.full(N_TERMS, np.nan),
           "std_err_x": np.nan, "std_err_y": np.nan, "n_stars": 0,
           "offset_x": np.nan, "offset_y": np.nan, "status": STATUS["missing"],
           "error_scale": np.nan, "error_floor": np.nan}
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
    if np.isfinite(sx) and params.weights == "inverse-variance":
        var = sum(d[k][i] ** 2 for d, i in ((tgt, i_tgt), (ref, i_ref)) for k in ("x_err", "y_err")) / 2
        a, b, w = star_weights(x, y, X, Y, cx, cy, var, used)
        cx, cy, used, sx, sy = fit_cubic(x, y, X, Y, params.clip_sigma, min_stars=params.min_stars,
                                         weights=w)
        out.update(error_scale=a, error_floor=b)
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


def star_weights(x, y, X, Y, cx, cy, var, used):
    """(a, b, weights): the error model sigma_eff^2 = a^2 var + b^2 (px) of the position
    differences fitted to the residuals of the unweighted fit (cx, cy) on its ``used`` stars, and
    every star's weight 1 / sigma_eff^2 (px^-2); ``var`` is the sum of the two detections' Fisher
    variances per axis (px^2)."""
    from starcenter.cubes.classical.stats import error_model

    px, py = apply(cx, cy, x, y)
    rx, ry = X - px, Y - py
    s = np.sqrt(var)
    a, b = error_model(np.r_[rx[used], ry[used]], np.r_[s[used], s[used]])
    ok = np.isfinite(var) & (var > 0)  # a star without a sigma gets no weight
    return a, b, np.where(ok, 1.0 / (a**2 * np.where(ok, var, 1.0) + b**2), 0.0)


def _preflight(store, params: TransformParams | None = None, **_) -> None:
    """Weights need detections with uncertainties (written since the Fisher errors)."""
    if params is not None and params.weights != "none":
        path = st.store_path(store)
        root = st.open_root(path)
        if schema.DETECTIONS in root and "x_err" not in root[schema.DETECTIONS]:
            raise StoreMismatchError(path, "its detections have no uncertainties (made before they "
                                     "were written): rerun `starcenter detect --overwrite` for "
                                     f"--weights {params.weights}")


@driver.preflight(_preflight)
@driver.holds_lock("catalog")
def compute_transforms(store, params: TransformParams | None = None, progress: bool = True):
    """The transforms stage: every (exposure, chip)'s cubic transformation into the reference.

    Small output: computed in full with dask, written once.

    Parameters
    ----------
    store : str or path
        A store with detections.
    params : TransformParams, optional
        Reference exposure, central fraction, q window, match radius (px), clipping (sigma).
    progress : bool
        Progress lines.

    Returns
    -------
    xarray.Dataset
        The transforms group: coefficients (px), standard errors (px), offsets at the chip
        centre (px), star counts and a status per (exposure, chip).
    """
    import dask
    import xarray as xr

    params = params or TransformParams()
    path = st.store_path(store)
    driver.require(path, schema.DETECTIONS)
    det = st.open_group(path, schema.DETECTIONS)
    ne, nc = det.sizes[schema.EXPOSURE], det.sizes[schema.CHIP]
    if not 0 <= params.reference < ne:
        raise BadArgumentError(f"reference exposure {params.reference} not in 0..{ne - 1}")

    def task(e, c):
        return solve_exposure(st.open_root(path), e, c, params)

    tasks = [dask.delayed(task)(e, c) for e in range(ne) for c in range(nc)]
    results = st.run_tasks(tasks, f"transforms {path}", progress)
    G = schema.TRANSFORMS
    ds = xr.Dataset(
        {k: schema.variable(G, k, np.array([r[k] for r in results]).reshape((ne, nc) + np.shape(results[0][k])))
         for k in results[0]},
        coords={schema.EXPOSURE: det[schema.EXPOSURE].values, schema.CHIP: det[schema.CHIP].values,
                schema.TERM: np.array(TERMS, dtype=object)},
        attrs={"params": params.to_json(), "normalization": "u, v = (x, y - 399.5) / 399.5",
               "detections_params": det.attrs.get("params", "")},
    )
    ds["status"].attrs.update(flag_values=list(STATUS.values()), flag_meanings=" ".join(STATUS))
    st.write_dataset(path, G, ds)
    names = {v: k.replace("_", " ") for k, v in STATUS.items()}
    for e, c in zip(*np.nonzero(ds["status"].values != 0)):
        print(f"transforms: exposure {e} chip {ds[schema.CHIP].values[c]}: "
              f"{names[int(ds['status'].values[e, c])]}; flagged and skipped")
    return ds
