"""Training rasters: n x n cutouts around the catalog stars in every exposure (paper sec. 3, 5.1).

Selection (per chip, star-level): catalog stars of the central region with 1e-4 <= q <= 1,
unsaturated, no other detection within ``isolation`` px in the reference exposure, and measured
in at least ``min_fraction`` of the exposures. Each raster is cut around the star's preliminary
classical position in that exposure and normalized to sum 1 (as the paper, whatever the noise or
saturation). Raster convention: pixel (ry, rx) of a raster is chip pixel (corner_y + ry,
corner_x + rx) with corner = round(position) - size // 2, and targets are positions minus the
corner in the schema pixel convention, so a target lies in [size//2 - 0.5, size//2 + 0.5).
"""

from __future__ import annotations

import json

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.params import DetectParams
from starcenter.cubes.stages.psf import chip_epsfs
from starcenter.cubes.errors import StoreMismatchError
from starcenter.cubes.classical.transforms import offset_phase
from starcenter.cubes.classical.cutouts import cut
from starcenter.cubes.params import RasterParams
from starcenter.cubes.stages.selection import (
    STACK_EXPOSURES,
    STACK_MIN_EXPOSURES,
    STACK_PSFS,
    select_stars,
    stacked_residual,
)

RY, RX, AXIS = "ry", "rx", "axis"
#: Exposures per chunk of the rasters group: many exposures of one chip per chunk, the unit
#: the tf.data bridge streams (64 x ~400 stars x 36 px x 4 B ~ 3.7 MB).
EXPOSURE_BLOCK = 64


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
    mag = np.full((nb, n), np.nan, np.float32)
    mask = np.zeros((nb, n), bool)
    truth = cat["truth"][e0:e1, c]
    native = cat["native"][e0:e1, c]
    det_index = cat["det_index"][e0:e1, c]
    has_done = "done" in root[schema.EXPOSURES]
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
        ras[i, idx] = r
        corner[i, idx] = cn
        prelim[i, idx] = native[i, idx]
        target[i, idx] = truth[i, idx] - cn  # NaN where the catalog has no truth
        dmag = root[f"{schema.DETECTIONS}/mag"][e, c]
        mag[i, idx] = dmag[det_index[i, idx]]
        mask[i, idx] = True
    g["raster"][e0:e1, c] = ras
    g["corner"][e0:e1, c] = corner
    g["target"][e0:e1, c] = target
    g["prelim"][e0:e1, c] = prelim
    g["mag"][e0:e1, c] = mag
    g["mask"][e0:e1, c] = mask
    g["done"][e0 // EXPOSURE_BLOCK, c] = 1


def make_rasters(store, params: RasterParams | None = None, progress: bool = True):
    """Write the ``rasters`` group from the catalog (and, for simulations, exact targets)."""
    import dask
    import dask.array as da
    import xarray as xr
    import zarr

    params = params or RasterParams()
    path = st.store_path(store)
    if not st.has_group(path, schema.CATALOG):
        raise StoreMismatchError(path, "has no catalog: run `starcenter catalog` first")
    cat = st.open_group(path, schema.CATALOG)
    tr = st.open_group(path, schema.TRANSFORMS)
    tparams = json.loads(tr.attrs["params"])
    ne, nc, nstar = cat.sizes[schema.EXPOSURE], cat.sizes[schema.CHIP], cat.sizes[schema.STAR]
    root = zarr.open_group(path, mode="r")
    det_index = root[f"{schema.CATALOG}/det_index"]
    n_ok = (tr["status"].values == 0).sum(axis=0)
    selected = np.zeros((nc, nstar), bool)
    stack = np.full((nc, nstar), np.nan)
    with_truth = np.flatnonzero(np.isfinite(cat["truth"].values[..., 0]).any(axis=(1, 2)))
    dparams = DetectParams(**json.loads(st.open_group(path, schema.DETECTIONS).attrs["params"]))
    stack_on = (params.max_stack_residual > 0 and with_truth.size >= STACK_MIN_EXPOSURES
                and dparams.psf in STACK_PSFS)
    if stack_on:
        _, epsfs = chip_epsfs(path, dparams)
        ex = st.open_group(path, schema.EXPOSURES)
        use = with_truth[np.unique(np.linspace(0, with_truth.size - 1,
                                               min(with_truth.size, STACK_EXPOSURES)).round().astype(int))]
    elif params.max_stack_residual > 0 and progress:
        why = (f"detections fitted with the {dparams.psf} ePSF (the cut needs one of {STACK_PSFS})"
               if dparams.psf not in STACK_PSFS else
               f"{with_truth.size} exposures with catalog truth (< {STACK_MIN_EXPOSURES})")
        print(f"rasters: stacked-residual cut skipped: {why}", flush=True)
    for c in range(nc):
        ref_idx = det_index[tparams["reference"], c]
        ref_idx = ref_idx[ref_idx >= 0]
        selected[c] = select_stars(root, c, ref_idx, cat["count"].values[c], n_ok[c], params,
                                   tparams["reference"])
        if stack_on:
            stars = np.flatnonzero(selected[c])
            stack[c, stars] = stacked_residual(path, c, stars, epsfs[str(cat[schema.CHIP].values[c])],
                                               float(ex["gain"].values[c]), float(ex["read_noise"].values[c]),
                                               use, progress)
            selected[c, stars] &= stack[c, stars] <= params.max_stack_residual
    phase = np.stack([offset_phase(tr["offset_x"].values), offset_phase(tr["offset_y"].values)], -1)
    nblk = -(-ne // EXPOSURE_BLOCK)
    blk = (min(EXPOSURE_BLOCK, ne), 1, nstar)
    dims = (schema.EXPOSURE, schema.CHIP, schema.STAR)
    source = cat.attrs.get("detections_params", "") + cat.attrs.get("params", "")
    stale = st.has_group(path, schema.RASTERS) and (
        st.open_group(path, schema.RASTERS).attrs.get("params") != params.to_json()
        or st.open_group(path, schema.RASTERS).attrs.get("catalog_source") != source)
    if not st.has_group(path, schema.RASTERS) or stale:
        tmpl = xr.Dataset(
            {"raster": (dims + (RY, RX), da.zeros((ne, nc, nstar, params.size, params.size),
                                                  chunks=blk + (params.size, params.size), dtype=np.float32),
                        {"description": "cutout normalized to sum 1", "normalization": "sum"}),
             "target": (dims + (AXIS,), da.zeros((ne, nc, nstar, 2), chunks=blk + (2,)),
                        {"units": "px", "description": "catalog truth - corner (raster convention)"}),
             "prelim": (dims + (AXIS,), da.zeros((ne, nc, nstar, 2), chunks=blk + (2,)),
                        {"units": "px", "description": "preliminary classical position (chip px)"}),
             "corner": (dims + (AXIS,), da.zeros((ne, nc, nstar, 2), chunks=blk + (2,), dtype=np.int32),
                        {"units": "px", "description": "chip pixel of raster pixel (0, 0), (x, y)"}),
             "mag": (dims, da.zeros((ne, nc, nstar), chunks=blk, dtype=np.float32), {"units": "mag"}),
             "mask": (dims, da.zeros((ne, nc, nstar), chunks=blk, dtype=bool),
                      {"description": "True where the raster is valid"}),
             "selected": ((schema.CHIP, schema.STAR), selected, {"description": "star passes the selection"}),
             "stack_residual": ((schema.CHIP, schema.STAR), stack, {
                 "units": "flux fraction per px", "description": "largest departure of the star's "
                 "stacked fit residual from the chip's common pattern within 2 px (NaN: not a "
                 "candidate or cut off)"}),
             "offset_phase": ((schema.EXPOSURE, schema.CHIP, AXIS), phase,
                              {"description": "fractional part of the exposure's offset from the reference"}),
             "done": (("block", schema.CHIP), da.zeros((nblk, nc), chunks=(1, 1), dtype=np.uint8), {})},
            coords={schema.EXPOSURE: cat[schema.EXPOSURE].values, schema.CHIP: cat[schema.CHIP].values,
                    AXIS: np.array(["x", "y"], dtype=object),
                    "star_key": ((schema.CHIP, schema.STAR),
                                 (np.arange(nc)[:, None] * 1_000_000 + np.arange(nstar)[None]).astype(np.int64),
                                 {"description": "unique star id in this store (split key)"})},
            attrs={"params": params.to_json(), "catalog_source": source, "size": params.size,
                   "normalization": "sum to 1",
                   "convention": __doc__.split("Raster convention: ")[1].strip(), "complete": 0},
        )
        st.write_template(path, schema.RASTERS, tmpl,
                          {"target": {"fill_value": np.nan}, "prelim": {"fill_value": np.nan},
                           "mag": {"fill_value": np.nan}})
    done = st.done_mask(path, schema.RASTERS)
    tasks = []
    for c in range(nc):
        for b in range(nblk):
            if not done[b, c]:
                e0, e1 = b * EXPOSURE_BLOCK, min(ne, (b + 1) * EXPOSURE_BLOCK)
                tasks.append(dask.delayed(_write_block)(path, c, e0, e1, selected[c], params))
    st.run_tasks(tasks, f"rasters {path}", progress)
    if st.has_group(path, schema.TRUTH):
        st.add_variables(path, schema.RASTERS, _exact_targets(path))
    st.set_attr(path, schema.RASTERS, complete=1)
    return st.open_group(path, schema.RASTERS)


def _exact_targets(path):
    """Simulations: the exact target (simulation truth - corner) of every raster, found by
    matching catalog stars to true stars in the reference exposure (nearest within 0.5 px)."""
    import xarray as xr

    ras = st.open_group(path, schema.RASTERS)
    cat = st.open_group(path, schema.CATALOG)
    truth = st.open_group(path, schema.TRUTH)
    tp = json.loads(st.open_group(path, schema.TRANSFORMS).attrs["params"])
    ref = tp["reference"]
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
