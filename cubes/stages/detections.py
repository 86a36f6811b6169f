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

import json
from dataclasses import asdict, dataclass

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import BadArgumentError, StarcenterError, StoreMismatchError
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.cubes.classical.psffit import FLAGS, fit_stars, model_image

PSF_KINDS = ("library", "true", "empirical", "catalog")
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


@dataclass(frozen=True)
class DetectParams:
    psf: str = "library"
    threshold: float = 5.0
    min_separation: float = 2.0
    #: passes of neighbour subtraction (0: none, the hst1pass situation): each star refitted on
    #: the image minus the ePSF models of all other fitted stars
    neighbour_passes: int = 0

    def __post_init__(self):
        if self.psf not in PSF_KINDS:
            raise BadArgumentError(f"unknown --psf {self.psf!r}; expected one of {PSF_KINDS}")
        if self.threshold <= 0 or self.min_separation < 0:
            raise BadArgumentError("threshold must be > 0 and min_separation >= 0")
        if not 0 <= self.neighbour_passes <= 5:
            raise BadArgumentError(f"neighbour passes must be 0..5, got {self.neighbour_passes}")

    def to_json(self) -> str:
        d = asdict(self)
        if not d["neighbour_passes"]:  # stores made before the option existed stay compatible
            del d["neighbour_passes"]
        return json.dumps(d, sort_keys=True)


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


def chip_epsfs(store, params: DetectParams):
    """(chips, {chip: callable(exposure) -> EffectivePSF}) for the chosen kind (the ePSF a
    detections group was fitted with, for every later stage that models its stars). The true ePSF
    follows each exposure's focus (linear between the stored focus nodes, chip-centre field
    node); a store without a psf group (real data) gets the physical model's library ePSF."""
    ex = st.open_group(store, schema.EXPOSURES)
    chips = [str(c) for c in ex[schema.CHIP].values]
    filt = ex.attrs.get("filter")
    have_psf = st.has_group(store, schema.PSF)
    psf = st.open_group(store, schema.PSF) if have_psf else None
    os_ = int(psf.attrs["oversampling"]) if have_psf else schema.OVERSAMPLING
    out = {}
    for k, chip in enumerate(chips):
        if params.psf == "library":
            e = (EffectivePSF(psf["library"].sel(chip=chip).values, os_) if have_psf
                 else get_epsf(PSFParams(chip, filt)))
            out[chip] = lambda exp, e=e: e
        elif params.psf == "true":
            if not have_psf or "true" not in psf:
                raise StoreMismatchError(st.store_path(store), "has no true ePSF (only simulations "
                                         "do); use --psf library or empirical")
            true = psf["true"].sel(chip=chip)
            mid = true.sizes[schema.FIELD_Y] // 2
            nodes = true.isel({schema.FIELD_Y: mid, schema.FIELD_X: mid}).values
            focus = psf[schema.FOCUS].values
            exp_focus = ex["focus"].values if "focus" in ex.coords else np.full(ex.sizes["exposure"], focus[0])

            def true_for(exp, nodes=nodes, focus=focus, exp_focus=exp_focus):
                if len(focus) == 1:
                    return EffectivePSF(nodes[0], os_)
                w = np.interp(exp_focus[exp], focus, np.arange(len(focus)))
                i = min(int(w), len(focus) - 2)
                t = w - i
                return EffectivePSF((1 - t) * nodes[i] + t * nodes[i + 1], os_)

            out[chip] = true_for
        else:
            kind = params.psf
            if have_psf and kind in psf and chip in psf[kind][schema.CHIP].values:
                e = EffectivePSF(psf[kind].sel(chip=chip).values, os_)
            else:
                raise StarcenterError(f"{kind} ePSF missing: build_{kind}_psfs first")
            out[chip] = lambda exp, e=e: e
    return chips, out


def build_empirical_psfs(store, n_exposures: int = 3, progress: bool = True):
    """Build and store ``psf/empirical(chip, ey, ex)`` from the first ``n_exposures`` exposures."""
    import xarray as xr

    from starcenter.cubes.classical.empirical import build_empirical_epsf

    ex = st.open_group(store, schema.EXPOSURES)
    chips, lib = chip_epsfs(store, DetectParams("library"))
    sat = _saturation_dn(ex)
    data = {}
    for k, chip in enumerate(chips):
        sel = ex.isel(exposure=slice(0, n_exposures), chip=k)
        if progress:
            print(f"empirical ePSF {chip}: building from {sel.sizes['exposure']} exposures")
        e = build_empirical_epsf(sel["image"].values, sel["dq"].values if "dq" in sel else
                                 [None] * sel.sizes["exposure"], float(ex["gain"].values[k]),
                                 float(ex["read_noise"].values[k]), lib[chip](0), saturation_dn=sat)
        data[chip] = e.data
    n = schema.EPSF_SAMPLES
    off = (np.arange(n) - (n - 1) / 2) / schema.OVERSAMPLING
    emp = xr.DataArray(np.stack([data[c] for c in chips]), dims=(schema.CHIP, schema.EY, schema.EX),
                       coords={schema.CHIP: np.array(chips, dtype=object), schema.EY: off, schema.EX: off},
                       attrs={"description": f"empirical ePSF (photutils EPSFBuilder) from the first "
                                             f"{n_exposures} exposures"})
    st.add_variables(store, schema.PSF, xr.Dataset({"empirical": emp}, attrs={
        "oversampling": schema.OVERSAMPLING, "pixel_convention": schema.PIXEL_CONVENTION}))


def build_catalog_psfs(store, max_exposures: int = 400, iterations: int = 10, progress: bool = True):
    """Build and store ``psf/catalog(chip, ey, ex)``: per chip, the Anderson & King (2000) ePSF
    learnt at the average catalog's positions (:func:`cubes.empirical.catalog_epsf`) from the
    raster-selected stars (isolated, measured in most exposures) of up to ``max_exposures``
    exposures evenly spread over the set, starting from the library ePSF.

    This is the classical branch's second iteration: detections with the library ePSF ->
    catalog -> this ePSF -> ``detect --psf catalog`` -> catalog. Memory: the stamps, exposures x
    stars x 49 x 4 B (about 30 MB per chip for 400 exposures of 400 stars).
    """
    import dask
    import xarray as xr

    from starcenter.cubes.stages.catalog import catalog_stamps
    from starcenter.cubes.classical.empirical import CATALOG_HALF, catalog_epsf

    path = st.store_path(store)
    for g in (schema.CATALOG, schema.RASTERS):
        if not st.has_group(path, g):
            raise StoreMismatchError(path, f"has no {g!r} group: the catalog ePSF is learnt at the "
                                           "average catalog's positions; run `starcenter catalog` first")
    ex = st.open_group(path, schema.EXPOSURES)
    cat = st.open_group(path, schema.CATALOG)
    chips, lib = chip_epsfs(path, DetectParams("library"))
    selected = st.open_group(path, schema.RASTERS)["selected"].values
    ne = cat.sizes[schema.EXPOSURE]
    use = np.unique(np.linspace(0, ne - 1, min(ne, max_exposures)).round().astype(int))
    data = {}
    for c, chip in enumerate(chips):
        stars = np.flatnonzero(selected[c])
        if stars.size < 20:
            raise StarcenterError(f"{path}: only {stars.size} catalog stars selected on {chip}; "
                                  "too few to learn a catalog ePSF (need 20)")
        parts = [dask.delayed(catalog_stamps)(path, int(e), c, stars, CATALOG_HALF) for e in use]
        parts = st.run_tasks(parts, f"catalog ePSF stamps {chip}", progress)
        stamps = np.concatenate([p[0] for p in parts])
        x, y = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
        if progress:
            print(f"catalog ePSF {chip}: {stamps.shape[0]} star images from {use.size} exposures "
                  f"({stars.size} stars)", flush=True)
        e = catalog_epsf(stamps, x, y, lib[chip](0), float(ex["gain"].values[c]),
                         float(ex["read_noise"].values[c]), iterations=iterations, progress=progress)
        data[chip] = e.data
    n = schema.EPSF_SAMPLES
    off = (np.arange(n) - (n - 1) / 2) / schema.OVERSAMPLING
    arr = xr.DataArray(np.stack([data[c] for c in chips]), dims=(schema.CHIP, schema.EY, schema.EX),
                       coords={schema.CHIP: np.array(chips, dtype=object), schema.EY: off, schema.EX: off},
                       attrs={"description": "Anderson & King ePSF learnt at the average catalog's "
                                             f"positions from {use.size} exposures",
                              "catalog_source": cat.attrs.get("detections_params", "")})
    st.add_variables(path, schema.PSF, xr.Dataset({"catalog": arr}, attrs={
        "oversampling": schema.OVERSAMPLING, "pixel_convention": schema.PIXEL_CONVENTION}))


def _saturation_dn(ex) -> float | None:
    """Calibrated-DN level above which a pixel is treated as saturated when no dq is stored."""
    return None if "dq" in ex else float(ex.attrs.get("saturation_dn", C.AD_SATURATION_DN)) - C.BIAS_DN - 100


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
