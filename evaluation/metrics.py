"""The paper's diagnostics: standard error of exposure -> reference transformations against
the offset phase (flat = no pixel-phase bias), and, for simulations, errors against truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.transforms import fit_cubic, offset_phase, tie_to_reference
from starcenter.cubes.params import TransformParams
from starcenter.cubes.store import open_group, open_root

#: Classical centres on exactly the stars a network trained on this store is scored on (its
#: test stars): the like-for-like comparison beside that network.
CLASSICAL_TEST = "classical-test-stars"
#: The classical centres of the raster stars alone: like for like with a network trained on other
#: data, which is scored on every raster star ("classical"'s transformations use every star).
CLASSICAL_KEPT = "classical-kept"
CLASSICAL = ("classical", CLASSICAL_KEPT, CLASSICAL_TEST)


def _identity(offset):
    return np.asarray(offset)


def _phase(offset):
    return offset_phase(offset)


@dataclass(frozen=True)
class Scope:
    """The raster stars (star,) a method is scored on for one chip, the stars it has seen in
    training (its training and validation stars; None for a method not trained on this store),
    and a label for the report."""

    scored: np.ndarray
    seen: np.ndarray | None
    label: str


def _test_stars(keys: np.ndarray, record: dict) -> np.ndarray:
    from starcenter.model.bridge import split_fraction

    lo, hi = record.get("fractions", {}).get("test", (0.8, 1.0))
    f = split_fraction(keys, int(record["seed"]))
    return (f >= lo) & (f < hi)


def network_scope(keys: np.ndarray, record: dict | None) -> Scope:
    """:class:`Scope` of a network's centres on one chip from the split record ``predict``
    stamps on centers/NAME (``split_<chip>``)."""
    every = np.ones(keys.shape, bool)
    if record is None:
        return Scope(every, None, "all stars; the model's training data are unknown (centres "
                     "written before split tracking): may include its training stars")
    if not record["trained_here"]:
        return Scope(every, None, "all stars: the model was trained on other data (out of sample)")
    if not record["same_stars"]:
        return Scope(~every, every, "none: the model was trained on this data but its stars "
                     "changed since (catalog rebuilt), so its split cannot be reproduced")
    test = _test_stars(keys, record)
    lo, hi = record.get("fractions", {}).get("test", (0.8, 1.0))
    return Scope(test, ~test, f"test stars only ({round(100 * (hi - lo))} % of the stars, split "
                 f"seed {record['seed']}): out of sample")


def scopes(store, method: str) -> dict[str, Scope]:
    """Per chip, the stars ``method`` is scored on: every raster star for the classical
    centres and for networks trained on other data; only the test stars of its split for a
    network trained on this store; for :data:`CLASSICAL_TEST`, the stars every such network is
    scored on."""
    ras = open_group(store, schema.RASTERS)
    keys = ras["star_key"].values
    chips = [str(c) for c in ras[schema.CHIP].values]
    if method in ("classical", CLASSICAL_KEPT):
        return {ch: Scope(np.ones(keys[c].shape, bool), None, "all raster stars (not trained)")
                for c, ch in enumerate(chips)}
    if method == CLASSICAL_TEST:
        out = {}
        nets = [scopes(store, m) for m in network_methods(store)]  # read once, not per chip
        for c, ch in enumerate(chips):
            mine = [n[ch].scored for n in nets if n[ch].seen is not None]
            scored = np.logical_and.reduce(mine) if mine else np.zeros(keys[c].shape, bool)
            out[ch] = Scope(scored, None, "classical centres on the test stars of the networks "
                            "trained on this store (like for like)")
        return out
    attrs = open_group(store, schema.centers_group(method)).attrs
    return {ch: network_scope(keys[c], attrs.get(f"split_{ch}")) for c, ch in enumerate(chips)}


def network_methods(store) -> list[str]:
    """Names of the centers/NAME groups."""
    root = open_root(store)
    return sorted(root[schema.CENTERS].group_keys()) if schema.CENTERS in root else []


def method_positions(store, method: str, stars: str = "scored") -> np.ndarray:
    """(exposure, chip, star, 2) chip-pixel centres of the raster stars for ``method``
    ('classical', 'classical-kept' and :data:`CLASSICAL_TEST` = the preliminary ePSF centres
    the rasters were cut around; CLASSICAL_TEST without the rasters holding a flagged pixel, which
    no network centres), NaN where no raster (masked). ``stars``: 'scored' keeps the
    stars the method is scored on (:func:`scopes`: a network's test stars on its own store),
    'seen' only those it trained on (in-sample), 'all' every raster star."""
    ras = open_group(store, schema.RASTERS)
    xy = ras["prelim"].values if method in CLASSICAL else \
        open_group(store, schema.centers_group(method))["xy"].values
    keep = ras["mask"].values
    if method == CLASSICAL_TEST and "dq" in ras:  # like for like: the measures a network centres
        keep &= ~C.is_bad(ras["dq"].values)
    if stars != "all":
        sc = scopes(store, method)
        for c, chip in enumerate(str(v) for v in ras[schema.CHIP].values):
            sel = sc[chip].scored if stars == "scored" else sc[chip].seen
            keep[:, c] &= (np.zeros(keep.shape[2], bool) if sel is None else sel)[None, :]
    return np.where(keep[..., None], xy, np.nan)


def per_star_rms(store, method: str, reference: int | None = None, min_repeats: int = 5) -> dict:
    """Per-star rms (mpix) about the star's mean position over repeated exposures (the paper's
    Fig. 19): every exposure's centres are carried into the reference frame by a cubic fit on
    the same method's centres, then each coordinate's rms over exposures is taken per star.
    Returns {chip: {"x": rms per star, "y": ..., "mag": magnitude per star}} for stars with at
    least ``min_repeats`` measures."""
    ras = open_group(store, schema.RASTERS)
    if reference is None:
        reference = reference_exposure(store)
    xy = method_positions(store, method)
    mag = ras["mag"].values if "mag" in ras else np.full(xy.shape[:3], np.nan)
    return {str(chip): per_star_rms_from(xy[:, c], mag[:, c], reference, min_repeats)
            for c, chip in enumerate(ras[schema.CHIP].values)}


def per_star_rms_from(xy: np.ndarray, mag: np.ndarray, reference: int, min_repeats: int = 5) -> dict:
    """:func:`per_star_rms` for one chip: ``xy`` (exposure, star, 2) px, NaN where unmeasured."""
    moved = tie_to_reference(xy, reference)
    keep = np.isfinite(moved[..., 0]).sum(axis=0) >= min_repeats
    rms = np.nanstd(moved[:, keep], axis=0, ddof=1) * 1e3  # >= min_repeats finite values each
    mags = np.where(np.isfinite(moved[..., 0]), mag, np.nan)[:, keep]
    m = np.array([np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan for v in mags.T])
    return {"x": rms[:, 0], "y": rms[:, 1], "mag": m}


def truth_vs_magnitude(store, method: str) -> dict:
    """Simulations: {chip: (magnitude, dx mpix, dy mpix)} of every scored raster, centre minus
    exact truth (the paper's Fig. 6)."""
    ras = open_group(store, schema.RASTERS)
    exact = (ras["corner"] + ras["target_exact"]).values
    d = (method_positions(store, method) - exact) * 1e3
    mag = ras["mag"].values
    out = {}
    for c, chip in enumerate(str(v) for v in ras[schema.CHIP].values):
        ok = np.all(np.isfinite(d[:, c]), axis=-1) & np.isfinite(mag[:, c])
        out[chip] = (mag[:, c][ok], d[:, c, :, 0][ok], d[:, c, :, 1][ok])
    return out


def transforms_from_positions(xy: np.ndarray, reference: int):
    """Standard errors (px) of every (exposure, chip) -> reference cubic transformation fitted
    on positions ``xy`` (exposure, chip, star, 2) px of stars already identified across
    exposures (NaN where unmeasured). Returns (std_err (exposure, chip, 2), offset at the chip
    centre (exposure, chip, 2), stars used (exposure, chip))."""
    ne, nc = xy.shape[:2]
    se = np.full((ne, nc, 2), np.nan)
    off = np.full((ne, nc, 2), np.nan)
    n = np.zeros((ne, nc), int)
    c0 = (C.CHIP_SIZE - 1) / 2
    for c in range(nc):
        ref = xy[reference, c]
        for e in range(ne):
            ok = np.all(np.isfinite(xy[e, c]), axis=1) & np.all(np.isfinite(ref), axis=1)
            if ok.sum() < 20:
                continue
            cx, cy, used, sx, sy = fit_cubic(xy[e, c, ok, 0], xy[e, c, ok, 1], ref[ok, 0], ref[ok, 1])
            se[e, c] = sx, sy
            off[e, c] = cx[0] - c0, cy[0] - c0  # constant terms: the offset at the chip centre
            n[e, c] = used.sum()
    return se, off, n


def transforms_from_centers(store, name: str, reference: int | None = None):
    """:func:`transforms_from_positions` on the scored raster stars' centres of method ``name``
    (centers/NAME, or 'classical' for the classical centres the rasters were cut around)."""
    if reference is None:
        reference = reference_exposure(store)
    return transforms_from_positions(method_positions(store, name), reference)


def single_measurement_mpix(std_err_mpix) -> float:
    """The single-measurement error (mpix) from exposure -> reference standard errors (mpix):
    their median over exposures divided by sqrt(2), since both the exposure and the reference
    carry one measurement's error per star (paper sec. 4)."""
    return round(float(np.nanmedian(std_err_mpix)) / np.sqrt(2), 2)


def phase_curve(phase: np.ndarray, std_err: np.ndarray, nbins: int = 5):
    """Median standard error in ``nbins`` bins of offset phase [0, 1); the bins at 0 and 1 are
    one (the curve is periodic): bins centred on 0, 1/n, ... Returns (centres, medians, counts)."""
    ph = np.mod(np.asarray(phase) + 0.5 / nbins, 1.0)
    b = np.minimum((ph * nbins).astype(int), nbins - 1)
    med = np.array([np.nanmedian(std_err[b == k]) if np.any((b == k) & np.isfinite(std_err)) else np.nan
                    for k in range(nbins)])
    cnt = np.array([(b == k).sum() for k in range(nbins)])
    return np.arange(nbins) / nbins, med, cnt


def flatness(phase, std_err, nbins: int = 5) -> float:
    """max / min of the binned standard error over offset phase (1 = flat)."""
    _, med, _ = phase_curve(phase, std_err, nbins)
    return float(np.nanmax(med) / np.nanmin(med))


def classical_curves(store, nbins: int = 5) -> dict:
    """Per chip and axis: phase curve (mpix) and flatness of the classical transforms."""
    tr = open_group(store, schema.TRANSFORMS)
    out = {}
    for k, chip in enumerate(str(c) for c in tr[schema.CHIP].values):
        ok = tr["status"].values[:, k] == 0
        res = {}
        for ax in ("x", "y"):
            se = tr[f"std_err_{ax}"].values[ok, k] * 1e3
            ph = offset_phase(tr[f"offset_{ax}"].values[ok, k])
            _, med, _ = phase_curve(ph, se, nbins)
            res[ax] = {"curve_mpix": np.round(med, 2).tolist(),
                       "flatness": round(float(np.nanmax(med) / np.nanmin(med)), 3),
                       "single_measurement_mpix": single_measurement_mpix(se)}
        out[chip] = res
    return out


def catalog_vs_exact(store) -> dict:
    """Simulations: rms (mpix) per chip and axis of catalog truth minus exact truth over valid
    rasters, after removing each (exposure, chip)'s mean difference (the catalog frame is the
    reference exposure's measured frame, defined up to a transformation); also the median
    absolute difference."""
    ras = open_group(store, schema.RASTERS)
    out = {}
    for k, chip in enumerate(str(c) for c in ras[schema.CHIP].values):
        d = (ras["target"].isel(chip=k) - ras["target_exact"].isel(chip=k)).values * 1e3
        m = ras["mask"].isel(chip=k).values
        d = np.where(m[..., None], d, np.nan)
        d = d - np.nanmean(d, axis=1, keepdims=True)
        out[chip] = {"rms_mpix": np.round(np.sqrt(np.nanmean(d**2, axis=(0, 1))), 2).tolist(),
                     "median_abs_mpix": np.round(np.nanmedian(np.abs(d), axis=(0, 1)), 2).tolist(),
                     "n_rasters": int(m.sum())}
    return out


def phase_data(store, method: str = "classical", full: bool = False) -> dict:
    """{chip: {"x": (offset phase, std_err mpix), "y": ...}} for the classical transforms (all
    the stars they used), for ``classical-kept`` (classical centres of the kept raster stars
    only: the like-for-like comparison with a network) or for centers/``method``; the reference
    exposure itself is left out. ``full``: the whole offset (px, the paper's Fig. 2 abscissa)
    instead of its phase."""
    abscissa = _identity if full else _phase
    tr = open_group(store, schema.TRANSFORMS)
    chips = [str(c) for c in tr[schema.CHIP].values]
    ref = schema.read_params(tr, TransformParams).reference
    out = {}
    if method == "classical":
        for k, chip in enumerate(chips):
            ok = (tr["status"].values[:, k] == 0) & (np.arange(tr.sizes[schema.EXPOSURE]) != ref)
            out[chip] = {ax: (abscissa(tr[f"offset_{ax}"].values[ok, k]),
                              tr[f"std_err_{ax}"].values[ok, k] * 1e3) for ax in ("x", "y")}
        return out
    se, off, _ = transforms_from_centers(store, method, ref)
    for k, chip in enumerate(chips):
        ok = np.all(np.isfinite(se[:, k]), axis=1) & (np.arange(se.shape[0]) != ref)
        if ok.any():
            out[chip] = {ax: (abscissa(off[ok, k, a]), se[ok, k, a] * 1e3) for a, ax in enumerate("xy")}
    return out


def reference_exposure(store) -> int:
    """The reference exposure of the store's transformations (index)."""
    return schema.read_params(open_group(store, schema.TRANSFORMS), TransformParams).reference


def fractional_histograms(store, method: str = "classical", nbins: int = 10) -> dict:
    """Per chip: histogram of fractional x and y of well-measured centres and the chi-square
    p-value against uniform (pixel-phase bias makes it non-uniform). Centres self-calibrated by
    the phase stage are checked cross-validated (each half of the stars corrected with the other
    half's coefficients)."""
    from scipy.stats import chisquare

    out = {}
    if method == "classical":
        det = st.open_group(store, schema.DETECTIONS)
        for k, chip in enumerate(str(c) for c in det[schema.CHIP].values):
            xs, ys = [], []
            for e in range(det.sizes[schema.EXPOSURE]):
                d = det.isel(exposure=e, chip=k)
                n = int(d["count"])
                ok = (~d["saturated"].values[:n]) & (d["flags"].values[:n] == 0)
                ok &= (d["q"].values[:n] >= 1e-4) & (d["q"].values[:n] <= 1) & (d["flux"].values[:n] > 1500)
                xs.append(d["x"].values[:n][ok])
                ys.append(d["y"].values[:n][ok])
            out[chip] = _hist(np.concatenate(xs), np.concatenate(ys), nbins, chisquare)
    else:
        # network centres exist only for raster stars; CLASSICAL_KEPT gives the classical
        # centres of exactly those stars, the fair comparison (networks: their scored stars)
        ras = st.open_group(store, schema.RASTERS)
        xy_all = _self_calibrated_check(store, method)
        halves = xy_all is not None  # cross-validated
        if xy_all is None:
            xy_all = method_positions(store, method)
        for k, chip in enumerate(str(c) for c in ras[schema.CHIP].values):
            xy = xy_all[:, k].reshape(-1, 2)
            xy = xy[np.all(np.isfinite(xy), axis=1)]
            if len(xy):
                out[chip] = _hist(xy[:, 0], xy[:, 1], nbins, chisquare)
                if halves:
                    out[chip]["cross_validated"] = True
    return out


def _self_calibrated_check(store, method: str):
    """For centres of the phase stage (``starcenter phase``): its source's centres, each half of the
    stars corrected with the coefficients of the other half (stages.phase fits and corrects the
    same stars, whose phases are then uniform by construction); None for any other method."""
    import json

    from starcenter.cubes.classical.phase import cross_validated, usable

    if method in CLASSICAL:
        return None
    attrs = open_group(store, schema.centers_group(method)).attrs
    if "phase_source" not in attrs:
        return None
    source, params = attrs["phase_source"], json.loads(attrs["phase_params"])
    xy = method_positions(store, source)
    # the stars the stage fits on
    if source in CLASSICAL:
        ok = usable(xy, open_group(store, schema.RASTERS)["prelim_err"].values)
    else:
        src = open_group(store, schema.centers_group(source))
        ok = usable(xy, *(src[v].values if v in src else None for v in ("sigma", "flags")))
    xy = np.where(ok[..., None], xy, np.nan)
    return np.stack([cross_validated(xy[:, c], **params) for c in range(xy.shape[1])], axis=1)


def _hist(x, y, nbins, chisquare):
    from starcenter.cubes.classical.phase import fractional

    fx, fy = fractional(x), fractional(y)
    hx = np.histogram(fx, nbins, (-0.5, 0.5))[0]
    hy = np.histogram(fy, nbins, (-0.5, 0.5))[0]
    return {"n": int(len(x)), "hist_x": hx.tolist(), "hist_y": hy.tolist(),
            "p_uniform_x": float(chisquare(hx).pvalue), "p_uniform_y": float(chisquare(hy).pvalue)}
