"""The selection step: which catalog stars become rasters (paper sec. 3, 5.1).

Per chip, star-level: catalog stars of the central region with 1e-4 <= q <= 1, unsaturated, no
other detection within ``isolation`` px in the reference exposure, measured in at least
``min_fraction`` of the usable exposures, median q not above ``q_rel_max`` x the median q of the
chip's stars (or of its stars of that magnitude, where higher: :func:`q_locus`),
and (with the catalog, fitted or true ePSF) a stacked fit residual close to the chip's common
pattern (:func:`stack_allowance`: a fixed fraction of the flux, more for faint stars).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.lookup import read_detections
from starcenter.cubes.params import RasterParams


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
        mag = np.asarray(root[f"{schema.CATALOG}/ref_mag"][chip], np.float64)
        # q's noise floor rises for faint stars (fitted ePSF, SIMULATION: median q 0.017 at
        # 3e4-1e5 e-, 0.16 at 1e3-3e3 e-), so a faint star is compared with its peers: the
        # chip median alone cut every 1e3-3e3 e- star; never stricter than the chip median
        floor = np.maximum(np.nanmedian(mq[keep]), q_locus(mq, mag, keep))
        keep &= np.nan_to_num(mq, nan=np.inf) <= params.q_rel_max * floor
    return keep


def q_locus(mq: np.ndarray, mag: np.ndarray, among: np.ndarray, per_bin: int = 20) -> np.ndarray:
    """The median q of the stars ``among`` at each star's magnitude: medians in magnitude bins
    of equal counts (at least ``per_bin`` stars, at most 8 bins), linearly interpolated in
    magnitude (held constant beyond the outer bins)."""
    ok = among & np.isfinite(mq) & np.isfinite(mag)
    nb = int(max(1, min(8, ok.sum() // per_bin)))
    if not ok.any():
        return np.full(mq.shape, np.nan)
    order = np.argsort(mag[ok])
    groups = np.array_split(order, nb)
    centre = np.array([np.median(mag[ok][g]) for g in groups])
    level = np.array([np.median(mq[ok][g]) for g in groups])
    return np.interp(np.nan_to_num(mag, nan=np.inf), centre, level)


#: The stacked residual: bins of STACK_BIN px over +-STACK_HALF px in each star's frame, from
#: up to STACK_EXPOSURES exposures spread over the set, in tasks of STACK_BLOCK exposures.
STACK_BIN, STACK_HALF, STACK_EXPOSURES, STACK_BLOCK = 0.5, 3, 200, 20


#: The stacked residual counts only departures beyond this many times the stack's noise per
#: bin. Measured (SIMULATION, 24 PC1 exposures, catalog ePSF, 154 candidates; a star is
#: contaminated when its catalog truth - exact rms exceeds 10 mpix): the bare departure (0) kept
#: 43 stars, none contaminated, but cut all 27 of 3e3-1e4 e- (6 contaminated) and 49 of 55 of
#: 1e4-3e4 e- (19): mostly on their noise; 1 keeps 72 (1 contaminated, 11 mpix), 2 keeps 91 (3),
#: 3 keeps 102 (8).
STACK_NOISE_K = 1.0


#: A faint star's stack may depart up to this multiple of its own single-exposure noise per
#: pixel (median over the bins within 2 px) where that exceeds ``max_stack_residual``: the
#: departure a neighbour leaves then biases the star by little against its own per-exposure
#: error. Measured (SIMULATION, bu5 test set: 96 exposures of a -10 .. +15 um focus sweep, fitted
#: ePSF + 2 neighbour passes; a star is contaminated when its catalog truth is >= 8 mpix off
#: the exact mean): at 1e3-3e3 e- (pixel noise 0.0055 of the flux) the fixed 0.002 kept 3 / 2
#: of 43 / 48 stars (PC1 / WF3), of which 12 / 14 are clean; 0.6 keeps 8 / 7 (1 / 2
#: contaminated, median bias 4.9 / 3.3 mpix against their ~40 mpix single-exposure error);
#: brighter bins unchanged (their pixel noise x 0.6 <= 0.0015). 0.8 keeps 12 / 8 (3 / 3).
STACK_NOISE_REL = 0.6


#: Fewest exposures with catalog truth for the stacked-residual cut to apply.
STACK_MIN_EXPOSURES = 20


#: Detection ePSFs the cut applies to. With the library ePSF of a mismatched epoch the residual
#: pattern depends on each star's own phase sampling and swamps neighbours (measured on a
#: 24-exposure simulation: every WF3 star's stack departs by 0.005-0.03 > the 0.002 cut), so the
#: cut waits for an ePSF that matches every exposure: the catalog ePSF (the second iteration, one
#: epoch), the fitted one (each exposure's own PSF epoch, `starcenter psf`; on a focus sweep the
#: single catalog ePSF leaves every star at 0.003-0.04) or, on simulations, the true one.
STACK_PSFS = ("catalog", "fitted", "true")


def _stack_block(path, c, exposures, stars, epsf_for, gain, rn):
    """Sums, counts and summed variances (Poisson + read noise) of the normalized residuals
    (pixel - sky) / flux - ePSF of ``stars`` over ``exposures``, binned in each star's frame:
    three arrays (n_star * nb * nb,)."""
    from starcenter.cubes.classical.empirical import linear_flux_sky, stamp_offsets
    from starcenter.cubes.classical.fieldpsf import evaluate_at
    from starcenter.cubes.stages.psf import catalog_stamps

    import zarr

    root = zarr.open_group(path, mode="r")
    nb = round(2 * STACK_HALF / STACK_BIN) + 1
    num, den, var = (np.zeros(len(stars) * nb * nb) for _ in range(3))
    for e in exposures:
        stamps, x, y, idx = catalog_stamps(path, int(e), c, stars, STACK_HALF)
        if idx.size == 0:
            continue
        dx, dy = stamp_offsets(x, y, STACK_HALF)
        # each star's own ePSF of a field model: its chip-centre ePSF left every star outside
        # the central third failing the cut (a whole-chip catalog of a field-varying SIMULATION:
        # 32 of 3916 stars kept)
        pos = root[f"{schema.CATALOG}/truth"][int(e), c][stars][idx]  # chip px of each star
        model = evaluate_at(epsf_for(int(e)), pos[:, 0], pos[:, 1], dx, dy)
        d = stamps.astype(float)
        flux, sky = linear_flux_sky(d, model, np.full(d.shape, (rn / gain) ** 2))
        fitted = np.isfinite(flux) & np.isfinite(sky) & (np.nan_to_num(flux) > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (d - sky[:, None, None]) / flux[:, None, None] - model
            v = (np.clip(d, 0, None) / gain + (rn / gain) ** 2) / flux[:, None, None] ** 2
        bx = np.round(dx / STACK_BIN).astype(int) + nb // 2
        by = np.round(dy / STACK_BIN).astype(int) + nb // 2
        ok = fitted[:, None, None] & np.isfinite(r) & (bx >= 0) & (bx < nb) & (by >= 0) & (by < nb)
        k = ((idx[:, None, None] * nb + by) * nb + bx)[ok]
        num += np.bincount(k, r[ok], num.size)
        den += np.bincount(k, None, den.size)
        var += np.bincount(k, v[ok], var.size)
    return num, den, var


def stack_statistics(num: np.ndarray, den: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(departure, pixel noise) per star from the binned sums, counts and summed variances
    (n_star, nb, nb) of :func:`_stack_block`.

    departure: the largest departure of the star's stack from the common pattern (the median
    stack over the stars) within 2 px beyond STACK_NOISE_K times the stack's own noise per bin
    (fraction of flux per pixel; inf where it cannot be measured). pixel noise: the median over
    those bins of one exposure's noise per pixel (fraction of flux; inf where unmeasured)."""
    nb = num.shape[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty bins -> NaN, handled below
        stack = np.where(den >= 3, num / np.where(den > 0, den, 1), np.nan)
        common = np.nanmedian(stack, axis=0)
        off = (np.arange(nb) - nb // 2) * STACK_BIN
        inner = (np.abs(off)[:, None] <= 2) & (np.abs(off)[None, :] <= 2)
        noise = np.sqrt(var) / np.where(den > 0, den, 1)
        dev = (np.abs(stack - common) - STACK_NOISE_K * noise)[:, inner]
        metric = np.nanmax(np.where(np.isfinite(dev), dev, -np.inf), axis=1)
        pixel = np.where(den >= 3, np.sqrt(var / np.where(den > 0, den, 1)), np.nan)[:, inner]
        pixel = np.nanmedian(pixel, axis=1)
    return (np.where(np.isfinite(metric), np.clip(metric, 0, None), np.inf),
            np.where(np.isfinite(pixel), pixel, np.inf))


def stack_allowance(pixel_noise: np.ndarray, max_stack_residual: float) -> np.ndarray:
    """Largest stack departure a star may have (flux fraction per px): ``max_stack_residual``,
    or STACK_NOISE_REL x its single-exposure pixel noise where that is larger (faint stars)."""
    noise = np.where(np.isfinite(pixel_noise), pixel_noise, 0.0)
    return np.maximum(max_stack_residual, STACK_NOISE_REL * noise)


def stacked_residual(path: str, c: int, stars: np.ndarray, epsf_for, gain: float, rn: float,
                     exposures: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per star, the stacked residual's departure and pixel noise (:func:`stack_statistics`).

    The normalized residuals of every star image (fitted for flux and sky at the catalog's
    position with the detections' ePSF) are averaged over ``exposures`` in STACK_BIN px bins of
    the star's own frame; the median stack over the stars (the ePSF's error, common to all) is
    subtracted. A neighbour too faint or too close to be detected in one exposure stands out in
    the stack of hundreds, where noise falls as 1/sqrt(exposures). The noise allowances keep
    faint stars, whose stacks are noise-dominated, from failing on their noise alone.
    """
    import dask

    nb = round(2 * STACK_HALF / STACK_BIN) + 1
    if len(stars) == 0:
        return np.zeros(0), np.zeros(0)
    blocks = [exposures[i:i + STACK_BLOCK] for i in range(0, len(exposures), STACK_BLOCK)]
    parts = st.run_tasks([dask.delayed(_stack_block)(path, c, b, stars, epsf_for, gain, rn) for b in blocks],
                         f"stacked residuals chip {c}", progress)
    num, den, var = (sum(p[k] for p in parts).reshape(len(stars), nb, nb) for k in range(3))
    return stack_statistics(num, den, var)


def stack_cut(path: str, params: RasterParams, progress: bool = True):
    """``(chip index, stars) -> (departure, pixel noise)`` (:func:`stack_statistics`) where the
    stacked-residual cut applies, else None (with the reason printed): it needs the catalog,
    fitted (or true) ePSF and at least STACK_MIN_EXPOSURES exposures with catalog truth (on a
    chip: whose PSF-epoch fit was not flagged, else that chip's call gives None)."""
    from starcenter.cubes.lookup import chip_epsfs
    from starcenter.cubes.params import DetectParams

    if params.max_stack_residual <= 0:
        return None
    cat = st.open_group(path, schema.CATALOG)
    with_truth = np.flatnonzero(np.isfinite(cat["truth"].values[..., 0]).any(axis=(1, 2)))
    dparams = schema.read_params(st.open_group(path, schema.DETECTIONS), DetectParams)
    if with_truth.size < STACK_MIN_EXPOSURES or dparams.psf not in STACK_PSFS:
        if progress:
            why = (f"detections fitted with the {dparams.psf} ePSF (the cut needs one of {STACK_PSFS})"
                   if dparams.psf not in STACK_PSFS else
                   f"{with_truth.size} exposures with catalog truth (< {STACK_MIN_EXPOSURES})")
            print(f"rasters: stacked-residual cut skipped: {why}", flush=True)
        return None
    _, epsfs = chip_epsfs(path, dparams)
    ex = st.open_group(path, schema.EXPOSURES)
    chips = [str(c) for c in cat[schema.CHIP].values]
    use = with_truth[np.unique(np.linspace(0, with_truth.size - 1,
                                           min(with_truth.size, STACK_EXPOSURES)).round().astype(int))]
    flagged = fit_flagged(path, dparams.psf, len(chips))

    def cut(c: int, stars: np.ndarray):
        matched = use[~flagged[use, c]]
        if matched.size < STACK_MIN_EXPOSURES:  # the fit failed on most exposures: no cut, said
            print(f"rasters: stacked-residual cut skipped on {chips[c]}: {matched.size} exposures with a "
                  f"fitted PSF epoch (< {STACK_MIN_EXPOSURES})", flush=True)
            return None
        return stacked_residual(path, c, stars, epsfs[chips[c]], float(ex["gain"].values[c]),
                                float(ex["read_noise"].values[c]), matched, progress)

    return cut


def fit_flagged(path: str, psf: str, n_chips: int) -> np.ndarray:
    """(exposure, chip) bool: detections fitted with the library ePSF because the exposure's
    PSF-epoch fit was flagged (``psf`` "fitted" only). They stay out of the stack: a mismatched
    library ePSF's residuals swamp every star's, and the cut would drop the chip's stars (measured,
    SIMULATION, a -15..+20 um focus sweep of 128 exposures, 4 flagged at the grid's ends: of 600
    PC1 stars, median departure 0.020 and none kept with them, 0.013 and 89 kept without)."""
    n_exp = st.open_group(path, schema.EXPOSURES).sizes["exposure"]
    if psf != "fitted" or not st.has_group(path, schema.PSF_FIT):
        return np.zeros((n_exp, n_chips), bool)
    return ~np.isfinite(st.open_group(path, schema.PSF_FIT)["focus"].values)
