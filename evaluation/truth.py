"""Comparisons with simulation truth: match measured centres to true positions, and the
pixel-phase statistics of the errors. Simulations only (real data have no truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.phase import fractional
from starcenter.cubes.classical.stats import robust_sigma
from starcenter.cubes.store import open_group
from starcenter.evaluation.cramer_rao import error_over_bound
from starcenter.evaluation.metrics import method_positions
from starcenter.evaluation.summary import central_third

#: Flux bins (e-) of the Cramér–Rao comparison.
FLUX_BINS = (3e3, 1e4, 3e4, 1e5)  # e-


@dataclass
class Matched:
    """Matched detections of one (exposure, chip): measured and true positions (px), true flux
    (e-), fit q, flags, saturated, and ``isolated`` (no other true star brighter than
    ``contamination`` x this star's flux within ``radius`` px)."""

    x: np.ndarray
    y: np.ndarray
    x_true: np.ndarray
    y_true: np.ndarray
    flux_true: np.ndarray
    q: np.ndarray
    flags: np.ndarray
    saturated: np.ndarray
    isolated: np.ndarray

    @property
    def dx(self):
        return self.x - self.x_true

    @property
    def dy(self):
        return self.y - self.y_true

    def well_measured(self, min_flux=1e4, max_flux=9e4, central=True) -> np.ndarray:
        """Isolated, unsaturated, unflagged, 1e-4 <= q <= 1 stars in a flux range (e-)."""
        ok = self.isolated & ~self.saturated & (self.flags == 0) & (self.q >= 1e-4) & (self.q <= 1)
        ok &= (self.flux_true >= min_flux) & (self.flux_true <= max_flux)
        if central:
            ok &= central_third(self.x_true, self.y_true)
        return ok


def match_to_truth(store, exposure: int, chip: str, max_dist: float = 0.5, radius: float = 5.0,
                   contamination: float = 0.02, min_flux_e: float = 300.0) -> Matched:
    """Match the detections of (exposure, chip) to the nearest true star above ``min_flux_e``."""
    det = open_group(store, schema.DETECTIONS).sel(chip=chip).isel(exposure=exposure)
    truth = open_group(store, schema.TRUTH).sel(chip=chip)
    n = int(det["count"])
    x, y = det["x"].values[:n], det["y"].values[:n]
    tx = truth["x"].isel(exposure=exposure).values
    ty = truth["y"].isel(exposure=exposure).values
    tf = truth["flux"].values
    ok = np.isfinite(tf)
    tx, ty, tf = tx[ok], ty[ok], tf[ok]
    bright = np.flatnonzero(tf > min_flux_e)
    d, j = cKDTree(np.c_[tx[bright], ty[bright]]).query(np.c_[x, y])
    hit = d < max_dist
    j = bright[j[hit]]
    all_tree = cKDTree(np.c_[tx, ty])
    near = all_tree.query_ball_point(np.c_[tx[j], ty[j]], radius)
    contam = np.array([tf[np.asarray(v)].sum() for v in near]) - tf[j] if j.size else np.zeros(0)
    sel = lambda v: det[v].values[:n][hit]  # noqa: E731
    return Matched(x[hit], y[hit], tx[j], ty[j], tf[j], sel("q"), sel("flags"),
                   sel("saturated").astype(bool), contam < contamination * tf[j])


def phase_profile(phase: np.ndarray, err: np.ndarray, nbins: int = 5):
    """Mean error (same units as ``err``) and count in ``nbins`` bins of pixel phase [-0.5, 0.5)."""
    edges = np.linspace(-0.5, 0.5, nbins + 1)
    b = np.clip(np.digitize(phase, edges) - 1, 0, nbins - 1)
    mean = np.array([err[b == k].mean() if np.any(b == k) else np.nan for k in range(nbins)])
    count = np.bincount(b, minlength=nbins)
    return 0.5 * (edges[1:] + edges[:-1]), mean, count


#: Fractional pixel of positions in the schema convention, in [-0.5, 0.5) (the phase stage's kernel).
pixel_phase = fractional


def truth_errors(store, methods, stars: str = "scored") -> dict:
    """Simulations: rms and robust (1.4826 MAD) error against exact truth per method and chip,
    on each method's scored stars (``stars='seen'``: a network's own training stars)."""
    ras = st.open_group(store, schema.RASTERS)
    exact = (ras["corner"] + ras["target_exact"]).values
    out = {}
    for m in methods:
        xy = method_positions(store, m, stars)
        out[m] = {}
        for k, chip in enumerate(str(c) for c in ras[schema.CHIP].values):
            d = (xy[:, k] - exact[:, k]).reshape(-1, 2) * 1e3
            d = d[np.all(np.isfinite(d), axis=1)]
            if not len(d):
                continue
            mad = robust_sigma(d, axis=0)
            out[m][chip] = {"rms_mpix": np.round(np.sqrt(np.mean(d**2, axis=0)), 2).tolist(),
                            "robust_mpix": np.round(mad, 2).tolist(), "n": int(len(d))}
    return out


def star_bounds(store, chip: str, exposure, x, y, flux, sky_e, read_noise: float):
    """Cramér–Rao bounds (px; x, y) of simulated stars, each with its own true ePSF: its exposure's
    true focus (linear between the focus nodes) at its place on the chip (linear between the field
    nodes), the ePSF the simulator drew it with. One value per measure: ``exposure`` (index), true
    ``x``, ``y`` (px) and ``flux`` (e-); ``sky_e`` (e-/px: one value, or one per measure, e.g. the
    local background with the crowded field's unresolved starlight) and read noise (e-).

    The chip-centre ePSF alone misstates the bound off the centre: SIMULATION, F555W, 3e4 e-,
    the field nodes' bound over the centre's is 0.83-1.15 (WF3, -12 um) and 0.78-1.66 (PC1, +17 um).
    """
    from starcenter.cubes.lookup import true_star_epsfs
    from starcenter.evaluation.cramer_rao import position_bound

    epsfs, weights = true_star_epsfs(store, chip)
    exposure, x, y, flux = (np.asarray(a).ravel() for a in (exposure, x, y, flux))
    sky = np.broadcast_to(np.asarray(sky_e, float).ravel(), x.shape)
    bx, by = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    for e in np.unique(exposure):
        s = exposure == e
        bx[s], by[s] = position_bound(epsfs(e).ravel(), flux[s], sky[s], read_noise, x[s] - np.round(x[s]),
                                      y[s] - np.round(y[s]), weights=weights(x[s], y[s]))
    return bx, by


def efficiency(store, methods) -> dict:
    """Simulations: per method, chip and flux bin (e-), the Cramér–Rao bound (rms over stars,
    mpix, x) from each star's own true ePSF (:func:`star_bounds`), flux, the sky and read noise,
    and the efficiency 1 / error_over_bound^2 of the x errors against exact truth (the robust
    sigma of each error over its star's bound: 1 for an estimator that reaches the bound)."""
    ras = st.open_group(store, schema.RASTERS)
    ex = st.open_group(store, schema.EXPOSURES)
    truth = st.open_group(store, schema.TRUTH)
    cat_sky = json.loads(st.read_attrs(store).get("starcenter_simulation", "{}"))
    out = {}
    for k, chip in enumerate(str(c) for c in ras[schema.CHIP].values):
        idx = ras["sim_index"].isel(chip=k).values
        ok_star = idx >= 0
        flux = np.full(idx.shape, np.nan)
        flux[ok_star] = truth["flux"].sel(chip=chip).values[idx[ok_star]]
        exact = (ras["corner"] + ras["target_exact"]).isel(chip=k).values  # (exposure, star, 2)
        mask = ras["mask"].isel(chip=k).values & ok_star[None, :]
        f = np.broadcast_to(flux, mask.shape)[mask]
        exposure = np.broadcast_to(np.arange(mask.shape[0])[:, None], mask.shape)[mask]
        sky_e = cat_sky.get("sky", 0.0) * float(ex["exptime"].values[0]) * float(ex["pixel_scale"].values[k]) ** 2
        bx, _ = star_bounds(store, chip, exposure, exact[..., 0][mask], exact[..., 1][mask], f, sky_e,
                            float(ex["read_noise"].values[k]))
        for m in methods:
            xy = method_positions(store, m)[:, k]
            err = (xy[..., 0] - exact[..., 0])[mask]
            rows = []
            for lo, hi in zip(FLUX_BINS[:-1], FLUX_BINS[1:]):
                sel = (f >= lo) & (f < hi) & np.isfinite(err)
                if sel.sum() < 20:
                    continue
                mad = robust_sigma(err[sel])
                bound = float(np.sqrt(np.mean(bx[sel] ** 2)))
                rows.append({"flux_e": [lo, hi], "n": int(sel.sum()), "bound_mpix": round(bound * 1e3, 2),
                             "robust_error_mpix": round(float(mad) * 1e3, 2),
                             "efficiency": round(error_over_bound(err[sel], bx[sel]) ** -2, 3)})
            out.setdefault(m, {})[chip] = rows
    return out
