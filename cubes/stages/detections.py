"""The detections stage: classical centring of every exposure (the hst1pass stand-in).

Per (exposure, chip) chunk: detect peaks (:mod:`cubes.detect`), fit x, y, flux and sky on the
inner 5x5 pixels with an ePSF (:mod:`cubes.psffit`), and write ``detections(exposure, chip, det)``
padded with NaN to the largest count, with ``count(exposure, chip)``. The ePSF is ``library``
(the nominal ePSF: the hst1pass situation), ``true`` (the simulator's, diagnostics only) or
``empirical`` (built from a few exposures with photutils' EPSFBuilder) or ``catalog`` (the
Anderson & King 2000 ePSF learnt from every exposure at the average catalog's positions: the
classical branch's second iteration, see :func:`build_catalog_psfs`).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.fieldpsf import fit_grouped, model_grouped, modelled
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.classical.psffit import FLAGS
from starcenter.cubes.lookup import chip_epsfs
from starcenter.cubes.params import DetectParams
from starcenter.cubes.stages.psf import _saturation_dn, ensure_psf

#: The per-detection variables of the group (schema.SPECS["detections"]), padded beyond count.
DET_VARS = ("x", "y", "flux", "sky", "q", "mag", "saturated", "flags", "x_err", "y_err", "flux_err")
CAPACITY = schema.DET_CAPACITY


def detect_chunk(image, dq, epsf: EffectivePSF, gain: float, read_noise: float,
                 params: DetectParams, saturation_dn: float | None = None) -> dict:
    """Detections of one chip image as a dict of 1-d arrays (see DET_VARS). ``epsf`` is one
    EffectivePSF for the chip, or a FieldEPSF (``--psf fitted``): each star fitted with the ePSF
    of its place on the chip."""
    image = np.asarray(image, float)
    pk = find_peaks(image, dq, gain, read_noise, params.threshold, params.min_separation,
                    saturation_dn=saturation_dn, epsf=getattr(epsf, "centre", epsf))
    if dq is not None:  # flagged pixels (saturated, bled, cosmic ray, bad) are left out of the fits
        image = np.where(C.is_bad(dq), np.nan, image)
    fit = fit_grouped(image, pk.x, pk.y, epsf, gain, read_noise, pk.saturated, sky=pk.sky)
    for _ in range(params.neighbour_passes):
        usable = modelled(fit.x, fit.y, fit.flux, fit.flags)
        model = model_grouped(image.shape, fit.x[usable], fit.y[usable], fit.flux[usable], epsf)
        f0 = np.where(usable, fit.flux, 0.0)
        fit = fit_grouped(image, pk.x, pk.y, epsf, gain, read_noise, pk.saturated, sky=pk.sky,
                          neighbours=(model, np.nan_to_num(fit.x), np.nan_to_num(fit.y), f0), start=fit)
    order = np.lexsort((pk.x, pk.y))  # row-major: deterministic
    mag = fit.mag
    out = {"x": fit.x, "y": fit.y, "flux": fit.flux, "sky": fit.sky, "q": fit.q, "mag": mag,
           "saturated": pk.saturated, "flags": fit.flags, "x_err": fit.x_err, "y_err": fit.y_err,
           "flux_err": fit.flux_err}
    return {k: np.asarray(v)[order] for k, v in out.items()}


def _template(ex, capacity: int):
    """The detections group's template: (exposure, chip, det) slots, one chunk per (exposure, chip)."""
    sizes = {schema.EXPOSURE: ex.sizes[schema.EXPOSURE], schema.CHIP: ex.sizes[schema.CHIP],
             schema.DET: capacity}
    coords = {schema.EXPOSURE: ex[schema.EXPOSURE].values,
              schema.CHIP: np.array([str(c) for c in ex[schema.CHIP].values], dtype=object)}
    ds, enc = schema.template(schema.DETECTIONS, DET_VARS + ("count", "done"), sizes, coords, {
        "pixel_convention": schema.PIXEL_CONVENTION,
        "padding": "slots beyond count hold NaN (floats), False, 0"})
    ds["flags"].attrs.update(flag_masks=list(FLAGS.values()), flag_meanings=" ".join(FLAGS))
    return ds, enc


def _write_detections(store: str, e: int, c: int, epsf_for, gain, rn, params, sat_dn, capacity):
    import zarr

    root = zarr.open_group(store, mode="r+")
    image = root[f"{schema.EXPOSURES}/image"][e, c]
    dq = root[f"{schema.EXPOSURES}/dq"][e, c] if "dq" in root[schema.EXPOSURES] else None
    det = detect_chunk(image, dq, epsf_for(e), gain, rn, params, sat_dn)
    n = det["x"].size
    if n > capacity:  # keep the brightest; recorded through count == capacity
        keep = np.sort(np.argsort(det["flux"])[::-1][:capacity])
        det = {k: v[keep] for k, v in det.items()}
        n = capacity
    g = root[schema.DETECTIONS]
    for name in DET_VARS:
        if name not in g:  # a group laid down before uncertainties were written (resumed)
            continue
        arr = g[name]
        pad = np.full(arr.shape[2] - n, arr.fill_value, arr.dtype)  # NaN, False or 0
        arr[e, c] = np.concatenate([det[name].astype(arr.dtype), pad])
    g["count"][e, c] = n
    g["done"][e, c] = 1
    return n


def _preflight(store, params: DetectParams | None = None, overwrite: bool = False, **_) -> None:
    """Detections made with other parameters are refused unless ``overwrite``."""
    params = params or DetectParams()
    if params.library:  # a bad STDPSF file is refused before anything is written
        from starcenter.cubes.archive.stdpsf import read_stdpsf

        ex = st.open_group(store, schema.EXPOSURES)
        read_stdpsf(params.library, str(ex[schema.CHIP].values[0]), ex.attrs.get("filter"))
    if st.has_group(store, schema.DETECTIONS) and not overwrite:
        driver.check_unchanged(store, schema.DETECTIONS, {"params": params.to_json()},
                               "; pass --overwrite to replace them")


@driver.preflight(_preflight)
@driver.holds_lock("detect")
def detect(store, params: DetectParams | None = None, progress: bool = True, overwrite: bool = False,
           capacity: int = CAPACITY, rebuild_psf: bool = False) -> dict:
    """The detections stage: classical centres of every (exposure, chip) of ``store`` not yet done.

    Parameters
    ----------
    store : str or path
        A store with an exposures group.
    params : DetectParams, optional
        The ePSF kind (library, true, empirical, catalog), threshold (sigma), minimum peak
        separation (px) and neighbour passes; default ``DetectParams()``.
    progress : bool
        Progress lines.
    overwrite : bool
        Replace detections made with other parameters (refused otherwise).
    capacity : int
        Detection slots per (exposure, chip) while writing (the brightest are kept beyond it).
    rebuild_psf : bool
        Rebuild an empirical or catalog ePSF even if the store has one.

    Returns
    -------
    dict
        ``written`` and ``skipped`` chunks, ``max_count`` (the largest number of detections).
    """
    import dask

    params = params or DetectParams()
    path = st.store_path(store)
    driver.require(path, schema.EXPOSURES)
    ex = st.open_group(path, schema.EXPOSURES)
    # built before the detections are replaced: the catalog ePSF reads the current ones
    ensure_psf(path, params.psf, rebuild_psf, progress)
    provenance = {"params": params.to_json()}
    if params.psf == "fitted":  # detections follow the fit they were made with
        provenance["psf_fit_params"] = st.open_group(path, schema.PSF_FIT).attrs.get("params", "")
    done = driver.prepare(path, schema.DETECTIONS, lambda: _template(ex, capacity), provenance, replace=overwrite,
                          refuse_hint="; pass --overwrite to replace them")
    chips, epsfs = chip_epsfs(path, params)
    ready = st.done_mask(path, schema.EXPOSURES) if "done" in ex else None
    cap = st.open_root(path)[f"{schema.DETECTIONS}/x"].shape[2]
    gain, rn = ex["gain"].values.astype(float), ex["read_noise"].values.astype(float)
    f = {chip: dask.delayed(epsfs[chip], traverse=False) for chip in chips}
    written = driver.run_chunks(
        path, schema.DETECTIONS, done,
        lambda e, c: dask.delayed(_write_detections, pure=True)(
            path, e, c, f[chips[c]], gain[c], rn[c], params, _saturation_dn(ex), cap),
        f"detect ({params.psf} ePSF) {path}", progress, ready)
    counts = st.open_root(path)[f"{schema.DETECTIONS}/count"][...]
    max_count = int(counts.max()) if counts.size else 0
    if st.done_mask(path, schema.DETECTIONS).all():
        _shrink(path, max(max_count, 1))
    driver.finish(path, schema.DETECTIONS)
    return {"written": written, "skipped": int(st.done_mask(path, schema.DETECTIONS).sum()) - written,
            "max_count": max_count}


def _shrink(path: str, n: int) -> None:
    """Shrink the det dimension to the largest count ``n`` (chunks stay as written)."""
    g = st.open_root(path, "r+")[schema.DETECTIONS]
    for name in DET_VARS:
        if g[name].shape[2] != n:
            g[name].resize(g[name].shape[:2] + (n,))
