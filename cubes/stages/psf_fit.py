"""The psf stage's fit: the PSF epoch of every (exposure, chip), from the exposure's own stars.

For each (exposure, chip) the physical model's secondary-mirror despace is fitted to the bright,
isolated, unsaturated stars (:mod:`starcenter.cubes.classical.focus`) and written to the
``psf_fit`` group: ``focus``, ``focus_err`` (um), ``n_stars``, ``chi2_red``, ``status``, with
``epsf(chip, focus_node, ey, ex)``, the physical-model ePSFs at the focus nodes the fits need
(an exposure's fitted ePSF is linear between the two nodes around its focus; ``detect --psf
fitted``). An exposure with too few usable stars, or whose minimum falls outside the grid, is
flagged and gets the library ePSF, with the reason printed. Resumable by chunks of
EXPOSURE_BLOCK exposures of one chip; deterministic (no random numbers).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical import focus as F
from starcenter.cubes.classical.fieldpsf import FIELD_NODES
from starcenter.cubes.errors import StoreMismatchError
from starcenter.cubes.lookup import chip_epsfs
from starcenter.cubes.params import DetectParams, PSFFitParams
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.cubes.stages.psf import _saturation_dn

BLOCK = schema.EXPOSURE_BLOCK
VARS = ("focus", "focus_err", "n_stars", "chi2_red", "status", "diffusion", "diffusion_err")


class _Model:
    """The physical model's ePSFs of one chip and filter (cached): ``model(focus)`` at the chip
    centre, ``model.field_at(focus, j, k)`` at field node (FIELD_NODES[k], FIELD_NODES[j])."""

    def __init__(self, chip: str, filt: str):
        self.chip, self.filter, self.cache = chip, filt, {}

    def __call__(self, focus: float):
        return self._get(round(float(focus), 6), None)

    def field_at(self, focus: float, j: int, k: int):
        return self._get(round(float(focus), 6), (FIELD_NODES[k], FIELD_NODES[j]))

    def _get(self, f, pos):
        if (f, pos) not in self.cache:
            self.cache[f, pos] = get_epsf(PSFParams(self.chip, self.filter, f, pos))
        return self.cache[f, pos]


def _fit_block(path: str, c: int, e0: int, e1: int, model: _Model, library, gain: float,
               rn: float, sat_dn, params: PSFFitParams) -> int:
    """Fit exposures e0..e1-1 of chip ``c`` and write their chunk (done marker last)."""
    import zarr

    root = zarr.open_group(path, mode="r+")
    has_dq = "dq" in root[schema.EXPOSURES]
    out = {k: [] for k in VARS}
    for e in range(e0, e1):
        image = root[f"{schema.EXPOSURES}/image"][e, c]
        dq = root[f"{schema.EXPOSURES}/dq"][e, c] if has_dq else None
        stars = F.select_stars(image, dq, gain, rn, library, sat_dn, params.min_snr,
                               params.isolation_px, params.max_stars)
        field_at = model.field_at if params.field == "on" else None
        fit = F.fit_focus(image, stars, params.grid(), model, gain, rn, params.min_stars, params.fine_step,
                          params.fine_step, field_at)
        if params.fit == "focus+diffusion" and fit.status == F.STATUS["ok"]:
            fit.diffusion, fit.diffusion_error = F.fit_diffusion(image, stars, fit.focus, model, gain, rn,
                                                                 params.fine_step, field_at)
        for k, v in zip(VARS, (fit.focus, fit.error, fit.n_stars, fit.chi2_red, fit.status, fit.diffusion,
                               fit.diffusion_error)):
            out[k].append(v)
    g = root[schema.PSF_FIT]
    for k in VARS:
        g[k][e0:e1, c] = np.asarray(out[k], dtype=g[k].dtype)
    g["done"][e0 // BLOCK, c] = 1
    return e1 - e0


def _template(ex, params: PSFFitParams):
    ne, nc = ex.sizes[schema.EXPOSURE], ex.sizes[schema.CHIP]
    sizes = {schema.EXPOSURE: ne, schema.CHIP: nc, schema.BLOCK: -(-ne // BLOCK)}
    coords = {schema.EXPOSURE: ex[schema.EXPOSURE].values,
              schema.CHIP: np.array([str(c) for c in ex[schema.CHIP].values], dtype=object)}
    ds, enc = schema.template(schema.PSF_FIT, VARS + ("done",), sizes, coords, {
        "filter": ex.attrs.get("filter", ""), "model": "poppy physical optics (cubes.sim.optics), "
        "secondary-mirror despace fitted per (exposure, chip)"})
    ds["status"].attrs.update(flag_values=list(F.STATUS.values()), flag_meanings=" ".join(F.STATUS))
    return ds, enc


def _preflight(store, params: PSFFitParams | None = None, **_) -> None:
    driver.require(store, schema.EXPOSURES)
    ex = st.open_group(store, schema.EXPOSURES)
    if ex.sizes.get(schema.EXPOSURE, 0) == 0:
        raise StoreMismatchError(st.store_path(store), "has an exposures group with no exposure")


@driver.preflight(_preflight)
@driver.holds_lock("psf")
def fit_psf(store, params: PSFFitParams | None = None, progress: bool = True) -> dict:
    """The psf stage's fit: the focus of every (exposure, chip) not yet done, and the ePSFs.

    Parameters
    ----------
    store : str or path
        A store with an exposures group (simulated or real).
    params : PSFFitParams, optional
        What is fitted and the star selection; default ``PSFFitParams()``.
    progress : bool
        Progress lines, and one line per chip with the fitted focus and any flagged exposure.

    Returns
    -------
    dict
        ``written`` chunks, and per chip the median fitted focus (um) and the flagged exposures.
    """
    import dask

    path = st.store_path(store)
    ex = st.open_group(path, schema.EXPOSURES)
    params = resolved(params or PSFFitParams(), path)
    done = driver.prepare(path, schema.PSF_FIT, lambda: _template(ex, params), {"params": params.to_json()})
    chips, lib = chip_epsfs(path, DetectParams("library"))
    filt = ex.attrs.get("filter")
    models = {c: _Model(c, filt) for c in chips}
    # the coarse nodes first, one task each, so no two workers compute the same ePSF
    st.run_tasks([dask.delayed(get_epsf)(PSFParams(c, filt, float(f))) for c in chips for f in params.grid()],
                 f"focus grid ePSFs ({len(params.grid())} per chip)", progress)
    ne = ex.sizes[schema.EXPOSURE]
    gain, rn = ex["gain"].values.astype(float), ex["read_noise"].values.astype(float)
    ready = _ready(path, ex, ne, len(chips))
    written = driver.run_chunks(path, schema.PSF_FIT, done, lambda b, c: dask.delayed(_fit_block)(
        path, c, b * BLOCK, min(ne, (b + 1) * BLOCK), models[chips[c]], lib[chips[c]](0), gain[c], rn[c],
        _saturation_dn(ex), params), f"psf fit ({params.fit}) {path}", progress, ready)
    summary = {"written": written}
    if driver.finish(path, schema.PSF_FIT):
        summary.update(_write_epsfs(path, chips, filt, params, progress))
    return summary


def resolved(params: PSFFitParams, path: str) -> PSFFitParams:
    """``field="auto"`` made definite: a simulation's own --field-varying, "on" for archive data."""
    if params.field != "auto":
        return params
    sim = st.read_attrs(path).get("starcenter_simulation")
    varying = json.loads(sim).get("field_varying", False) if sim else True
    return replace(params, field="on" if varying else "off")


def _ready(path: str, ex, ne: int, nc: int):
    """Blocks whose exposures are all written (a simulation still running leaves the rest)."""
    if "done" not in ex:
        return None
    d = st.done_mask(path, schema.EXPOSURES)
    return np.array([[d[b * BLOCK:(b + 1) * BLOCK, c].all() for c in range(nc)]
                     for b in range(-(-ne // BLOCK))])


def _write_epsfs(path: str, chips, filt: str, params: PSFFitParams, progress: bool) -> dict:
    """Write ``epsf(chip, focus_node)`` at the lattice nodes around every fitted focus; report."""
    import xarray as xr
    import zarr

    fit = st.open_group(path, schema.PSF_FIT)
    focus = fit["focus"].values
    ok = np.isfinite(focus)
    step = params.fine_step
    lo, hi = np.floor(focus[ok] / step + 1e-9), np.floor(focus[ok] / step + 1e-9) + 1
    nodes = np.unique(np.round(np.concatenate([lo, hi, [0.0]]) * step, 6))
    fld = np.array(FIELD_NODES) if params.field == "on" else np.array([400.0])
    models = {c: _Model(c, filt) for c in chips}
    get = (lambda c, f, j, k: models[c].field_at(f, j, k).data) if params.field == "on" else \
        (lambda c, f, j, k: models[c](f).data)
    data = np.stack([[[[get(c, float(f), j, k) for k in range(len(fld))] for j in range(len(fld))]
                      for f in nodes] for c in chips])
    n = schema.EPSF_SAMPLES
    off = (np.arange(n) - (n - 1) / 2) / schema.OVERSAMPLING
    ds = xr.Dataset({"epsf": schema.variable(schema.PSF_FIT, "epsf", data)}, coords={
        schema.CHIP: np.array(chips, dtype=object),
        schema.FOCUS_NODE: (schema.FOCUS_NODE, nodes, {"units": "um", "long_name": "SM despace"}),
        schema.FIELD_Y: (schema.FIELD_Y, fld, {"units": "px"}), schema.FIELD_X: (schema.FIELD_X, fld, {"units": "px"}),
        schema.EY: off, schema.EX: off}, attrs={"oversampling": schema.OVERSAMPLING, "focus_step": step})
    g = zarr.open_group(path, mode="r+", path=schema.PSF_FIT)
    for name in ("epsf", schema.FOCUS_NODE, schema.FIELD_Y, schema.FIELD_X, schema.EY, schema.EX):
        if name in g:
            del g[name]
    st.consolidate(path)
    st.add_variables(path, schema.PSF_FIT, ds)
    return _report(fit, chips, progress)


def _report(fit, chips, progress: bool) -> dict:
    """Per chip: median fitted focus and the flagged exposures with their reasons (printed)."""
    names = {v: k for k, v in F.STATUS.items()}
    out = {}
    for c, chip in enumerate(chips):
        f, s = fit["focus"].values[:, c], fit["status"].values[:, c]
        flagged = {int(e): names.get(int(s[e]), str(s[e])) for e in np.flatnonzero(s != 0)}
        med = float(np.nanmedian(f)) if np.isfinite(f).any() else float("nan")
        out[chip] = {"median_focus_um": med, "flagged": flagged}
        if progress:
            err = fit["focus_err"].values[:, c]
            print(f"psf fit {chip}: focus {med:+.2f} um (median of {int(np.isfinite(f).sum())}; typical "
                  f"error {np.nanmedian(err) if np.isfinite(err).any() else float('nan'):.2f} um)", flush=True)
            for e, why in flagged.items():
                print(f"  exposure {e}: flagged ({why.replace('_', ' ')}; "
                      f"{int(fit['n_stars'].values[e, c])} usable stars): the library ePSF is used")
    return {"chips": out}
