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
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.stages.detections import DetectParams, chip_epsfs
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.stages.transforms import offset_phase, read_detections

RY, RX, AXIS = "ry", "rx", "axis"
#: Exposures per chunk of the rasters group: many exposures of one chip per chunk, the unit
#: the tf.data bridge streams (64 x ~400 stars x 36 px x 4 B ~ 3.7 MB).
EXPOSURE_BLOCK = 64


@dataclass(frozen=True)
class RasterParams:
    """size: raster side (px). isolation: no other reference detection within this (px).
    min_fraction: measured in at least this fraction of the usable exposures. q_rel_max: a
    star's median q over exposures at most this multiple of the chip's median (undetected
    neighbours raise q; on the demo simulation the stars above 1.5x median q carry 60-75% of
    the catalog's > 50 mpix crowding errors). max_stack_residual: largest departure (fraction of
    the star's flux per pixel) of a star's stacked residual from the chip's common residual
    pattern (:func:`stacked_residual`); 0 turns the cut off. An undetected neighbour within 2 px
    shows in the stack of hundreds of exposures although each single fit hides it; measured on a
    160-exposure simulation with the catalog ePSF, the stars above 0.002 carry the catalog
    truth's crowding tail (truth - exact rms 9-13 mpix -> 1.9-2.9 mpix for the 45 % kept)."""

    size: int = 6
    isolation: float = 5.0
    min_fraction: float = 0.5
    q_rel_max: float = 1.5
    max_stack_residual: float = 0.002

    def __post_init__(self):
        if not 3 <= self.size <= 21:
            raise BadArgumentError(f"raster size must be 3..21 px, got {self.size}")
        if not 0 < self.min_fraction <= 1:
            raise BadArgumentError("min_fraction must be in (0, 1]")
        if self.max_stack_residual < 0:
            raise BadArgumentError("max_stack_residual must be >= 0 (0: no cut)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def cut(image: np.ndarray, x, y, size: int):
    """Rasters (n, size, size) around positions (x, y), their integer corners (n, 2) (x, y) and
    a validity mask (inside the image, finite, positive sum). Normalized to sum 1."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    cx = np.floor(x + 0.5).astype(int) - size // 2
    cy = np.floor(y + 0.5).astype(int) - size // 2
    k = np.arange(size)
    px = cx[:, None, None] + k[None, None, :]
    py = cy[:, None, None] + k[None, :, None]
    px, py = np.broadcast_arrays(px, py)
    inside = (cx >= 0) & (cy >= 0) & (cx + size <= image.shape[1]) & (cy + size <= image.shape[0])
    r = np.zeros(px.shape, np.float64)
    r[inside] = image[py[inside], px[inside]]
    s = r.sum(axis=(1, 2))
    ok = inside & np.isfinite(s) & (s > 0)
    r[ok] /= s[ok, None, None]
    r[~ok] = 0.0
    return r.astype(np.float32), np.stack([cx, cy], axis=-1), ok


def median_q(root, chip: int) -> np.ndarray:
    """Median over exposures of each catalog star's fit quality q (NaN if never measured)."""
    di = root[f"{schema.CATALOG}/det_index"][:, chip]
    q = np.full(di.shape, np.nan)
    for e in range(di.shape[0]):
        ok = di[e] >= 0
        if ok.any():
            q[e, ok] = root[f"{schema.DETECTIONS}/q"][e, chip][di[e, ok]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # never-measured stars -> NaN, handled
        return np.nanmedian(q, axis=0)


def select_stars(root, chip: int, ref_index: np.ndarray, count: np.ndarray, n_ok: int,
                 params: RasterParams, reference: int) -> np.ndarray:
    """Star-level selection mask over the catalog stars of one chip."""
    det = read_detections(root, reference, chip)
    n = len(ref_index)
    keep = np.zeros(count.shape, bool)
    if n == 0:
        return keep
    allxy = np.c_[det["x"], det["y"]]
    xy = allxy[ref_index]
    nbrs = cKDTree(allxy).query_ball_point(xy, params.isolation)
    isolated = np.array([len(v) == 1 for v in nbrs])
    keep[:n] = isolated & (count[:n] >= params.min_fraction * n_ok)
    mq = median_q(root, chip)
    if keep.any():
        keep &= np.nan_to_num(mq, nan=np.inf) <= params.q_rel_max * np.nanmedian(mq[keep])
    return keep


#: The stacked residual: bins of STACK_BIN px over +-STACK_HALF px in each star's frame, from
#: up to STACK_EXPOSURES exposures spread over the set, in tasks of STACK_BLOCK exposures.
STACK_BIN, STACK_HALF, STACK_EXPOSURES, STACK_BLOCK = 0.5, 3, 200, 20
#: Fewest exposures with catalog truth for the stacked-residual cut to apply.
STACK_MIN_EXPOSURES = 20
#: Detection ePSFs the cut applies to. With the library ePSF of a mismatched epoch the residual
#: pattern depends on each star's own phase sampling and swamps neighbours (measured on a
#: 24-exposure simulation: every WF3 star's stack departs by 0.005-0.03 > the 0.002 cut), so the
#: cut waits for the catalog ePSF (the second iteration) or, on simulations, the true one.
STACK_PSFS = ("catalog", "true")


def _stack_block(path, c, exposures, stars, epsf_for, gain, rn):
    """Sums and counts of the normalized residuals (pixel - sky) / flux - ePSF of ``stars`` over
    ``exposures``, binned in each star's frame: two arrays (n_star * nb * nb,)."""
    from starcenter.cubes.stages.catalog import catalog_stamps
    from starcenter.cubes.classical.empirical import linear_flux_sky, stamp_offsets

    nb = round(2 * STACK_HALF / STACK_BIN) + 1
    num, den = np.zeros(len(stars) * nb * nb), np.zeros(len(stars) * nb * nb)
    for e in exposures:
        stamps, x, y, idx = catalog_stamps(path, int(e), c, stars, STACK_HALF)
        if idx.size == 0:
            continue
        dx, dy = stamp_offsets(x, y, STACK_HALF)
        model = epsf_for(int(e)).evaluate(dx, dy)
        d = stamps.astype(float)
        flux, sky = linear_flux_sky(d, model, np.full(d.shape, (rn / gain) ** 2))
        fitted = np.isfinite(flux) & np.isfinite(sky) & (np.nan_to_num(flux) > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (d - sky[:, None, None]) / flux[:, None, None] - model
        bx = np.round(dx / STACK_BIN).astype(int) + nb // 2
        by = np.round(dy / STACK_BIN).astype(int) + nb // 2
        ok = fitted[:, None, None] & np.isfinite(r) & (bx >= 0) & (bx < nb) & (by >= 0) & (by < nb)
        k = ((idx[:, None, None] * nb + by) * nb + bx)[ok]
        num += np.bincount(k, r[ok], num.size)
        den += np.bincount(k, None, den.size)
    return num, den


def stacked_residual(path: str, c: int, stars: np.ndarray, epsf_for, gain: float, rn: float,
                     exposures: np.ndarray, progress: bool = False) -> np.ndarray:
    """Per star, the largest |stacked residual - common pattern| within 2 px (fraction of flux
    per pixel; inf where it cannot be measured).

    The normalized residuals of every star image (fitted for flux and sky at the catalog's
    position with the detections' ePSF) are averaged over ``exposures`` in STACK_BIN px bins of
    the star's own frame; the median stack over the stars (the ePSF's error, common to all) is
    subtracted. A neighbour too faint or too close to be detected in one exposure stands out in
    the stack of hundreds, where noise falls as 1/sqrt(exposures).
    """
    import dask

    nb = round(2 * STACK_HALF / STACK_BIN) + 1
    if len(stars) == 0:
        return np.zeros(0)
    blocks = [exposures[i:i + STACK_BLOCK] for i in range(0, len(exposures), STACK_BLOCK)]
    parts = st.run_tasks([dask.delayed(_stack_block)(path, c, b, stars, epsf_for, gain, rn) for b in blocks],
                         f"stacked residuals chip {c}", progress)
    num = sum(p[0] for p in parts).reshape(len(stars), nb, nb)
    den = sum(p[1] for p in parts).reshape(len(stars), nb, nb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty bins -> NaN, handled below
        stack = np.where(den >= 3, num / np.where(den > 0, den, 1), np.nan)
        common = np.nanmedian(stack, axis=0)
        off = (np.arange(nb) - nb // 2) * STACK_BIN
        inner = (np.abs(off)[:, None] <= 2) & (np.abs(off)[None, :] <= 2)
        dev = np.abs(stack - common)[:, inner]
        metric = np.nanmax(np.where(np.isfinite(dev), dev, -np.inf), axis=1)
    return np.where(np.isfinite(metric) & (metric >= 0), metric, np.inf)


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
