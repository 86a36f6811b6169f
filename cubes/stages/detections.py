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

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import StoreMismatchError
from starcenter.cubes.classical.psffit import FLAGS, fit_stars, model_image
from starcenter.cubes.params import DetectParams
from starcenter.cubes.stages.psf import (
    _saturation_dn,
    build_catalog_psfs,
    build_empirical_psfs,
    chip_epsfs,
)

#: Slots per (exposure, chip) reserved while writing; the det dimension is shrunk to the
#: largest count once every chunk is written.
CAPACITY = 32768
#: Variables of the detections group: (dtype, units, description).
DET_VARS = {
    "x": ("float64", "px", "fitted x, chip pixels (schema convention)"),
    "y": ("float64", "px", "fitted y, chip pixels"),
    "flux": ("float32", "DN", "fitted flux"),
    "sky": ("float32", "DN", "fitted sky per pixel"),
    "q": ("float32", "", "quality of fit: sum |residual| / flux over 5x5 (hst1pass-like); 0 = saturated"),
    "mag": ("float32", "mag", "instrumental magnitude -2.5 log10(flux / DN)"),
    "saturated": ("bool", "", "saturated star (not fitted; centre = peak pixel)"),
    "flags": ("int32", "", "fit flag bits: " + ", ".join(f"{v} {k}" for k, v in FLAGS.items())),
}


def detect_chunk(image, dq, epsf: EffectivePSF, gain: float, read_noise: float,
                 params: DetectParams, saturation_dn: float | None = None) -> dict:
    """Detections of one chip image as a dict of 1-d arrays (see DET_VARS)."""
    image = np.asarray(image, float)
    pk = find_peaks(image, dq, gain, read_noise, params.threshold, params.min_separation,
                    saturation_dn=saturation_dn, epsf=epsf)
    fit = fit_stars(image, pk.x, pk.y, epsf, gain, read_noise, pk.saturated, sky=pk.sky)
    for _ in range(params.neighbour_passes):
        usable = (fit.flags & (FLAGS["saturated"] | FLAGS["nonpositive_flux"] | FLAGS["not_converged"])) == 0
        usable &= np.isfinite(fit.x) & np.isfinite(fit.y) & np.isfinite(fit.flux)
        model = model_image(image.shape, fit.x[usable], fit.y[usable], fit.flux[usable], epsf)
        f0 = np.where(usable, fit.flux, 0.0)
        fit = fit_stars(image, pk.x, pk.y, epsf, gain, read_noise, pk.saturated, sky=pk.sky,
                        neighbours=(model, np.nan_to_num(fit.x), np.nan_to_num(fit.y), f0), start=fit)
    order = np.lexsort((pk.x, pk.y))  # row-major: deterministic
    mag = fit.mag
    out = {"x": fit.x, "y": fit.y, "flux": fit.flux, "sky": fit.sky, "q": fit.q, "mag": mag,
           "saturated": pk.saturated, "flags": fit.flags}
    return {k: np.asarray(v)[order] for k, v in out.items()}


def _template(store, ex, capacity: int, params: DetectParams):
    import dask.array as da
    import xarray as xr

    ne, nc = ex.sizes[schema.EXPOSURE], ex.sizes[schema.CHIP]
    data = {}
    for name, (dtype, units, desc) in DET_VARS.items():
        data[name] = ((schema.EXPOSURE, schema.CHIP, "det"),
                      da.zeros((ne, nc, capacity), chunks=(1, 1, capacity), dtype=dtype),
                      {"units": units, "description": desc})
    data["count"] = ((schema.EXPOSURE, schema.CHIP), da.zeros((ne, nc), chunks=(1, 1), dtype="int32"),
                     {"description": "number of detections (the rest of det is padding)"})
    data["done"] = ((schema.EXPOSURE, schema.CHIP), da.zeros((ne, nc), chunks=(1, 1), dtype="uint8"), {})
    ds = xr.Dataset(data, coords={schema.EXPOSURE: ex[schema.EXPOSURE].values,
                                  schema.CHIP: np.array([str(c) for c in ex[schema.CHIP].values], dtype=object)},
                    attrs={"params": params.to_json(), "complete": 0,
                           "pixel_convention": schema.PIXEL_CONVENTION,
                           "padding": "slots beyond count hold NaN (floats), False, 0"})
    enc = {k: {"fill_value": np.nan} for k, (dt, *_ ) in DET_VARS.items() if dt.startswith("float")}
    st.write_template(store, schema.DETECTIONS, ds, enc)


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
    for name, (dtype, *_ ) in DET_VARS.items():
        arr = g[name]
        pad = np.zeros(arr.shape[2] - n, dtype) if not dtype.startswith("float") else np.full(arr.shape[2] - n, np.nan, dtype)
        arr[e, c] = np.concatenate([det[name].astype(dtype), pad])
    g["count"][e, c] = n
    g["done"][e, c] = 1
    return n


def detect(store, params: DetectParams | None = None, progress: bool = True, overwrite: bool = False,
           capacity: int = CAPACITY, rebuild_psf: bool = False) -> dict:
    """Run the detections stage on every (exposure, chip) of ``store`` not yet done.

    Returns {'written', 'skipped', 'max_count'}. A detections group made with other parameters is
    refused unless ``overwrite``. An ``empirical`` or ``catalog`` ePSF is built first if the
    store has none (or ``rebuild_psf``).
    """
    import dask
    import zarr

    params = params or DetectParams()
    path = st.store_path(store)
    ex = st.open_group(path, schema.EXPOSURES)
    # built before the detections are replaced: the catalog ePSF reads the current ones
    if params.psf in ("empirical", "catalog"):
        have = st.has_group(path, schema.PSF) and params.psf in st.open_group(path, schema.PSF)
        if not have or rebuild_psf:
            (build_empirical_psfs if params.psf == "empirical" else build_catalog_psfs)(path, progress=progress)
    if st.has_group(path, schema.DETECTIONS):
        old = st.open_group(path, schema.DETECTIONS).attrs.get("params")
        if old != params.to_json():
            if not overwrite:
                raise StoreMismatchError(path, f"detections exist with other parameters ({old}); "
                                               "pass --overwrite to replace them")
            _template(path, ex, capacity, params)
    else:
        _template(path, ex, capacity, params)
    chips, epsfs = chip_epsfs(path, params)
    done = st.done_mask(path, schema.DETECTIONS)
    ex_done = st.done_mask(path, schema.EXPOSURES) if "done" in ex else np.ones(done.shape, bool)
    sat_dn = _saturation_dn(ex)
    cap = zarr.open_group(path, mode="r")[f"{schema.DETECTIONS}/x"].shape[2]
    tasks = []
    for c, chip in enumerate(chips):
        gain, rn = float(ex["gain"].values[c]), float(ex["read_noise"].values[c])
        f = dask.delayed(epsfs[chip], traverse=False)
        for e in range(done.shape[0]):
            if not done[e, c] and ex_done[e, c]:
                tasks.append(dask.delayed(_write_detections, pure=True)(path, e, c, f, gain, rn,
                                                                        params, sat_dn, cap))
    st.run_tasks(tasks, f"detect ({params.psf} ePSF) {path}", progress)
    done = st.done_mask(path, schema.DETECTIONS)
    root = zarr.open_group(path, mode="r+")
    counts = root[f"{schema.DETECTIONS}/count"][...]
    max_count = int(counts.max()) if counts.size else 0
    if done.all():
        # shrink the det dimension to the largest count (chunks stay as written)
        g = root[schema.DETECTIONS]
        for name in DET_VARS:
            arr = g[name]
            if arr.shape[2] != max(max_count, 1):
                arr.resize(arr.shape[:2] + (max(max_count, 1),))
        st.set_attr(path, schema.DETECTIONS, complete=1)
    return {"written": len(tasks), "skipped": int(done.sum()) - len(tasks), "max_count": max_count}
