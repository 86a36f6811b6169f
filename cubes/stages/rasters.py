"""Training rasters: n x n cutouts around the catalog stars in every exposure (paper sec. 3, 5.1).

The stars are chosen by the selection step (:mod:`starcenter.cubes.stages.selection`: isolated,
unsaturated catalog stars of the central region, measured in most exposures, clean stacked
residuals); this stage only cuts. Each raster is cut around the star's preliminary
classical position in that exposure and normalized to sum 1 (as the paper, whatever the noise or
saturation); with ``RasterParams(neighbours="subtract")`` (``starcenter catalog --neighbours
subtract``) it is cut from the image less the ePSF models of every other detected star (the
detections' fits and ePSF), so a crowded star's raster holds less of its neighbours' light.
Raster convention: pixel (ry, rx) of a raster is chip pixel (corner_y + ry,
corner_x + rx) with corner = round(position) - size // 2, and targets are positions minus the
corner in the schema pixel convention, so a target lies in [size//2 - 0.5, size//2 + 0.5).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.cutouts import cut
from starcenter.cubes.classical.fieldpsf import modelled, neighbour_free
from starcenter.cubes.classical.transforms import offset_phase
from starcenter.cubes.lookup import chip_epsfs
from starcenter.cubes.params import DetectParams, RasterParams, TransformParams
from starcenter.cubes.stages.selection import (
    select_stars,
    stack_allowance,
    stack_cut,
)

RY, RX, AXIS = schema.RY, schema.RX, schema.AXIS
EXPOSURE_BLOCK = schema.EXPOSURE_BLOCK


def _write_block(path, c, e0, e1, selected, params: RasterParams):
    import zarr

    root = zarr.open_group(path, mode="r+")
    cat = root[schema.CATALOG]
    g = root[schema.RASTERS]
    n = g["raster"].shape[2]
    size = params.size
    nb = e1 - e0
    ras = np.zeros((nb, n, size, size), np.float32)
    corner = np.full((nb, n, 2), -1, np.int32)
    target = np.full((nb, n, 2), np.nan)
    prelim = np.full((nb, n, 2), np.nan)
    prelim_err = np.full((nb, n, 2), np.nan, np.float32)
    mag = np.full((nb, n), np.nan, np.float32)
    mask = np.zeros((nb, n), bool)
    dq = np.zeros((nb, n), np.uint16)
    truth = cat["truth"][e0:e1, c]
    native = cat["native"][e0:e1, c]
    det_index = cat["det_index"][e0:e1, c]
    has_done = "done" in root[schema.EXPOSURES]
    epsf_for = _detections_epsf(path, c) if params.neighbours == "subtract" else None
    for i, e in enumerate(range(e0, e1)):
        if has_done and not root[f"{schema.EXPOSURES}/done"][e, c]:
            continue
        # rasters need a detection; a target needs the catalog truth too (a single real
        # exposure has rasters to centre but no truth: its targets stay NaN)
        sel = selected & (det_index[i] >= 0)
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        image = root[f"{schema.EXPOSURES}/image"][e, c]
        r, cn, ok = cut(image, native[i, idx, 0], native[i, idx, 1], size)
        idx, r, cn = idx[ok], r[ok], cn[ok]
        if params.neighbours == "subtract":
            r, ok = _neighbour_free(root, e, c, image, det_index[i, idx], cn, epsf_for, size)
            idx, r, cn = idx[ok], r[ok], cn[ok]
        if "dq" in root[schema.EXPOSURES]:
            dq[i, idx] = raster_dq(root[f"{schema.EXPOSURES}/dq"][e, c], cn, size)
        ras[i, idx] = r
        corner[i, idx] = cn
        prelim[i, idx] = native[i, idx]
        target[i, idx] = truth[i, idx] - cn  # NaN where the catalog has no truth
        dmag = root[f"{schema.DETECTIONS}/mag"][e, c]
        mag[i, idx] = dmag[det_index[i, idx]]
        if "x_err" in root[schema.DETECTIONS]:  # detections made before uncertainties: NaN
            for k, name in enumerate(("x_err", "y_err")):
                prelim_err[i, idx, k] = root[f"{schema.DETECTIONS}/{name}"][e, c][det_index[i, idx]]
        mask[i, idx] = True
    g["raster"][e0:e1, c] = ras
    g["corner"][e0:e1, c] = corner
    g["target"][e0:e1, c] = target
    g["prelim"][e0:e1, c] = prelim
    if "prelim_err" in g:  # absent from rasters laid down before uncertainties (resumed)
        g["prelim_err"][e0:e1, c] = prelim_err
    g["mag"][e0:e1, c] = mag
    g["mask"][e0:e1, c] = mask
    if "dq" in g:  # absent from rasters laid down before it (resumed)
        g["dq"][e0:e1, c] = dq
    g["done"][e0 // EXPOSURE_BLOCK, c] = 1


def _detections_epsf(path: str, c: int):
    """``exposure -> ePSF`` the detections of chip ``c`` were fitted with."""
    det = st.open_group(path, schema.DETECTIONS)
    chips, epsfs = chip_epsfs(path, schema.read_params(det, DetectParams))
    return epsfs[chips[c]]


def _neighbour_free(root, e: int, c: int, image, own, corners, epsf_for, size: int):
    """(rasters, ok) of one exposure's chip ``c`` less its other detected stars' ePSF models
    (:func:`starcenter.cubes.classical.fieldpsf.neighbour_free`); ``own``: each raster's detection."""
    det = root[schema.DETECTIONS]
    x, y, flux, flags = (np.asarray(det[v][e, c]) for v in ("x", "y", "flux", "flags"))
    use = modelled(x, y, flux, flags)
    return neighbour_free(image, x, y, flux, use, np.asarray(own), corners, epsf_for(e), size)


def raster_dq(dq: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """(n,) uint16: the OR of the data-quality bits of each raster's size x size pixels, corners
    (n, 2) chip pixel (x, y) of raster pixel (0, 0), inside the chip."""
    k = np.arange(size)
    px = corners[:, 0, None, None] + k[None, None, :]
    py = corners[:, 1, None, None] + k[None, :, None]
    return np.bitwise_or.reduce(np.asarray(dq)[py, px].reshape(len(corners), -1), axis=1).astype(np.uint16)


@driver.holds_lock("catalog")
def make_rasters(store, params: RasterParams | None = None, progress: bool = True):
    """The rasters stage: the selection step, then every selected star's raster in every exposure.

    Parameters
    ----------
    store : str or path
        A store with a catalog.
    params : RasterParams, optional
        Raster size (px) and the selection's cuts (isolation px, measured fraction, relative q,
        stacked residual).
    progress : bool
        Progress lines.

    Returns
    -------
    xarray.Dataset
        The rasters group: raster (exposure, chip, star, ry, rx) normalized to sum 1, target,
        prelim, corner (px, raster convention), mag, mask, dq, selected, offset_phase; for
        simulations target_exact.
    """
    import dask

    params = params or RasterParams()
    path = st.store_path(store)
    driver.require(path, schema.CATALOG)
    cat = st.open_group(path, schema.CATALOG)
    selected, stack, noise = select(path, params, progress)
    source = cat.attrs.get("detections_params", "") + cat.attrs.get("params", "")
    done = driver.prepare(path, schema.RASTERS, lambda: _template(path, params, selected, stack, noise),
                          {"params": params.to_json(), "catalog_source": source})
    ne = cat.sizes[schema.EXPOSURE]
    driver.run_chunks(path, schema.RASTERS, done, lambda b, c: dask.delayed(_write_block)(
        path, c, b * EXPOSURE_BLOCK, min(ne, (b + 1) * EXPOSURE_BLOCK), selected[c], params),
        f"rasters {path}", progress)
    if st.has_group(path, schema.TRUTH):
        st.add_variables(path, schema.RASTERS, _exact_targets(path))
    st.set_attr(path, schema.RASTERS, complete=1)
    return st.open_group(path, schema.RASTERS)


def _template(path: str, params: RasterParams, selected, stack, noise):
    """The rasters group's template: chunks of EXPOSURE_BLOCK exposures of one chip."""
    cat = st.open_group(path, schema.CATALOG)
    tr = st.open_group(path, schema.TRANSFORMS)
    ne, nc, nstar = cat.sizes[schema.EXPOSURE], cat.sizes[schema.CHIP], cat.sizes[schema.STAR]
    phase = np.stack([offset_phase(tr["offset_x"].values), offset_phase(tr["offset_y"].values)], -1)
    sizes = {schema.EXPOSURE: ne, schema.CHIP: nc, schema.STAR: nstar, RY: params.size,
             RX: params.size, AXIS: 2, schema.BLOCK: -(-ne // EXPOSURE_BLOCK)}
    coords = {schema.EXPOSURE: cat[schema.EXPOSURE].values, schema.CHIP: cat[schema.CHIP].values,
              AXIS: np.array(["x", "y"], dtype=object),
              "star_key": ((schema.CHIP, schema.STAR),
                           (np.arange(nc)[:, None] * 1_000_000 + np.arange(nstar)[None]).astype(np.int64),
                           {"description": "unique star id in this store (split key)"})}
    ds, enc = schema.template(
        schema.RASTERS, ("raster", "target", "prelim", "prelim_err", "corner", "mag", "mask", "dq", "selected",
                         "stack_residual", "stack_noise", "offset_phase", "done"), sizes, coords,
        {"size": params.size, "normalization": "sum to 1",
         "convention": __doc__.split("Raster convention: ")[1].strip()},
        values={"selected": selected, "stack_residual": stack, "stack_noise": noise, "offset_phase": phase})
    ds["raster"].attrs["normalization"] = "sum"
    return ds, enc


def select(path: str, params: RasterParams, progress: bool = True):
    """The selection step: (selected, stack_residual, stack_noise) over (chip, star), see
    :mod:`starcenter.cubes.stages.selection`."""
    cat = st.open_group(path, schema.CATALOG)
    tr = st.open_group(path, schema.TRANSFORMS)
    reference = schema.read_params(tr, TransformParams).reference
    nc, nstar = cat.sizes[schema.CHIP], cat.sizes[schema.STAR]
    root = st.open_root(path)
    det_index = root[f"{schema.CATALOG}/det_index"]
    n_ok = (tr["status"].values == 0).sum(axis=0)
    selected = np.zeros((nc, nstar), bool)
    stack, noise = np.full((nc, nstar), np.nan), np.full((nc, nstar), np.nan)
    stack_for = stack_cut(path, params, progress)
    for c in range(nc):
        ref_idx = det_index[reference, c]
        ref_idx = ref_idx[ref_idx >= 0]
        selected[c] = select_stars(root, c, ref_idx, cat["count"].values[c], n_ok[c], params, reference)
        if stack_for is not None:
            stars = np.flatnonzero(selected[c])
            measured = stack_for(c, stars)
            if measured is None:  # too few exposures with a matching ePSF on this chip: no cut
                continue
            stack[c, stars], noise[c, stars] = measured
            selected[c, stars] &= stack[c, stars] <= stack_allowance(noise[c, stars], params.max_stack_residual)
    return selected, stack, noise


def _exact_targets(path):
    """Simulations: the exact target (simulation truth - corner) of every raster, found by
    matching catalog stars to true stars in the reference exposure (nearest within 0.5 px)."""
    import xarray as xr

    ras = st.open_group(path, schema.RASTERS)
    cat = st.open_group(path, schema.CATALOG)
    truth = st.open_group(path, schema.TRUTH)
    ref = schema.read_params(st.open_group(path, schema.TRANSFORMS), TransformParams).reference
    ne, nc, nstar = ras.sizes[schema.EXPOSURE], ras.sizes[schema.CHIP], ras.sizes[schema.STAR]
    exact = np.full((ne, nc, nstar, 2), np.nan)
    sim_index = np.full((nc, nstar), -1, np.int64)
    for c, chip in enumerate(ras[schema.CHIP].values):
        t = truth.sel(chip=chip)
        flux = t["flux"].values
        real = np.flatnonzero(np.isfinite(flux) & (flux > 300))
        rx, ry = t["x"].isel(exposure=ref).values, t["y"].isel(exposure=ref).values
        mx = cat["native"].isel(exposure=ref, chip=c).values
        has = np.all(np.isfinite(mx), axis=1)
        d, j = cKDTree(np.c_[rx[real], ry[real]]).query(mx[has])
        good = d < 0.5
        stars = np.flatnonzero(has)[good]
        sim_index[c, stars] = real[j[good]]
        # only the matched stars' true positions are read (not the whole truth cube)
        tx = t["x"].isel(star=sim_index[c, stars]).values  # (exposure, matched)
        ty = t["y"].isel(star=sim_index[c, stars]).values
        corner = ras["corner"].isel(chip=c).values
        exact[:, c, stars, 0] = tx - corner[:, stars, 0]
        exact[:, c, stars, 1] = ty - corner[:, stars, 1]
    mask = ras["mask"].values
    exact[~mask] = np.nan
    return xr.Dataset({
        "target_exact": ((schema.EXPOSURE, schema.CHIP, schema.STAR, AXIS), exact,
                         {"units": "px", "description": "simulation truth - corner (simulations only)"}),
        "sim_index": ((schema.CHIP, schema.STAR), sim_index,
                      {"description": "index into truth's star dimension, -1 if unmatched"})})
