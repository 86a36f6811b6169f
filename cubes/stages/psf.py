"""The psf stage: the one ePSF lookup per (exposure, chip), and the ePSFs learnt from the data.

The ``psf`` group holds the library ePSF per chip (and, for simulations, the true ePSF over focus
and field nodes); ``empirical`` (photutils EPSFBuilder on a few exposures) and ``catalog`` (the
Anderson & King 2000 ePSF learnt at the average catalog's positions: the classical second
iteration) are added here. :func:`chip_epsfs` is how every stage gets the ePSF of an exposure.
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import StarcenterError, StoreMismatchError
from starcenter.cubes.lookup import chip_epsfs
from starcenter.cubes.params import DetectParams, PSFFitParams


@driver.holds_lock("detect")
def build_empirical_psfs(store, n_exposures: int = 3, progress: bool = True):
    """Build and store ``psf/empirical(chip, ey, ex)`` from the first ``n_exposures`` exposures."""

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
    _add_epsfs(store, "empirical", chips, data, f"empirical ePSF (photutils EPSFBuilder) from the "
               f"first {n_exposures} exposures")


@driver.holds_lock("detect")
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
    _add_epsfs(path, "catalog", chips, data, "Anderson & King ePSF learnt at the average catalog's "
               f"positions from {use.size} exposures", catalog_source=cat.attrs.get("detections_params", ""))


def _saturation_dn(ex) -> float | None:
    """Calibrated-DN level above which a pixel is treated as saturated when no dq is stored."""
    return None if "dq" in ex else float(ex.attrs.get("saturation_dn", C.AD_SATURATION_DN)) - C.BIAS_DN - 100


def catalog_stamps(path: str, e: int, c: int, stars: np.ndarray, half: int):
    """Pixels around the catalog positions of ``stars`` in exposure ``e``, chip ``c``.

    Returns stamps (n, 2h+1, 2h+1) DN (NaN on dq-flagged or off-chip pixels) centred on the pixel
    nearest each star, the star positions relative to that pixel (dx, dy, px) and the indices
    into ``stars`` of the n stars with a projected catalog position in this exposure.
    """
    import zarr

    from starcenter.cubes.classical.psffit import cut_boxes

    root = zarr.open_group(path, mode="r")
    xy = root[f"{schema.CATALOG}/truth"][e, c][stars]
    ok = np.flatnonzero(np.all(np.isfinite(xy), axis=1))
    xy = xy[ok]
    ix, iy = np.floor(xy[:, 0] + 0.5).astype(int), np.floor(xy[:, 1] + 0.5).astype(int)
    stamps = cut_boxes(root[f"{schema.EXPOSURES}/image"][e, c], ix, iy, half)[0]
    if "dq" in root[schema.EXPOSURES]:
        bad = cut_boxes(root[f"{schema.EXPOSURES}/dq"][e, c].astype(float), ix, iy, half)[0]
        stamps[np.nan_to_num(bad, nan=1) != 0] = np.nan
    return stamps.astype(np.float32), xy[:, 0] - ix, xy[:, 1] - iy, ok


def _add_epsfs(store, kind: str, chips, data: dict, description: str, **attrs) -> None:
    """Add ``psf/<kind>(chip, ey, ex)`` from {chip: 4x-supersampled grid}."""
    import xarray as xr

    n = schema.EPSF_SAMPLES
    off = (np.arange(n) - (n - 1) / 2) / schema.OVERSAMPLING
    arr = xr.DataArray(np.stack([data[c] for c in chips]), dims=(schema.CHIP, schema.EY, schema.EX),
                       coords={schema.CHIP: np.array(chips, dtype=object), schema.EY: off, schema.EX: off},
                       attrs={"description": description, **attrs})
    st.add_variables(store, schema.PSF, xr.Dataset({kind: arr}, attrs={
        "oversampling": schema.OVERSAMPLING, "pixel_convention": schema.PIXEL_CONVENTION}))


@driver.holds_lock("detect")
def ensure_psf(store, kind: str = "library", rebuild: bool = False, progress: bool = True,
               fit=None) -> None:
    """The psf stage: build the ``empirical`` or ``catalog`` ePSF, or fit the ``fitted`` PSF epoch
    (with ``fit``, a PSFFitParams; :func:`starcenter.cubes.stages.psf_fit.fit_psf`), if the store
    has none (or ``rebuild``); the library and true ePSFs come with the exposures."""
    if kind == "fitted" or fit is not None:
        from starcenter.cubes.stages.psf_fit import fit_psf

        have = st.has_group(store, schema.PSF_FIT)
        if rebuild and have:
            st.remove_group(store, schema.PSF_FIT)
        if fit is not None or rebuild or not have:
            fit_psf(store, fit, progress=progress)
        elif not st.open_group(store, schema.PSF_FIT).attrs.get("complete"):
            fit_psf(store, schema.read_params(st.open_group(store, schema.PSF_FIT), PSFFitParams),
                    progress=progress)  # an interrupted fit resumes with its own parameters
        return
    if kind not in ("empirical", "catalog"):
        return
    have = st.has_group(store, schema.PSF) and kind in st.open_group(store, schema.PSF)
    if not have or rebuild:
        (build_empirical_psfs if kind == "empirical" else build_catalog_psfs)(store, progress=progress)
