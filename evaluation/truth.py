"""Comparisons with simulation truth: match measured centres to true positions, and the
pixel-phase statistics of the errors. Simulations only (real data have no truth)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import schema
from starcenter.cubes.store import open_group

from starcenter.evaluation.summary import central_third


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


def pixel_phase(v) -> np.ndarray:
    """Fractional pixel of positions in the schema convention, in [-0.5, 0.5)."""
    v = np.asarray(v, float)
    return v - np.floor(v + 0.5)
