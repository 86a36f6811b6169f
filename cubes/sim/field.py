"""The sky side of a simulation: a 47 Tuc-like star field, the WFPC2 chip layout and dithers.

Global frame: (u, v) in arcseconds on the sky, tangent-plane, with the origin at the WFPC2
pyramid apex (where the four chips meet). Each chip maps its pixels into this frame by a
rotation (the four cameras are 90 degrees apart) and its pixel scale; optical distortion and
the 34th-row defect are not modelled (the paper's simulations leave them out too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starcenter.cubes import constants as C

#: Pixel of each chip that sits at the pyramid apex, and the chip rotation (deg) from the
#: chip (x, y) axes to (u, v). Approximate WFPC2 layout: the chips tile four quadrants.
APEX_PIXEL = (40.0, 40.0)
CHIP_ROTATION_DEG: dict[str, float] = {"PC1": 0.0, "WF2": 90.0, "WF3": 180.0, "WF4": 270.0}
#: Stars are generated this many pixels beyond each chip edge, so dithers and PSF wings
#: bring them in.
MARGIN_PX = 15.0

#: 47 Tuc-like luminosity function in V: relative stars per magnitude at nodes (V, dN/dV);
#: sparse giant branch with a horizontal-branch bump at V ~ 14.1, subgiants, the turnoff at
#: V ~ 17.6 and a main sequence rising to the faint limit. Shape after the NGC 104 CMDs of
#: Gilliland et al. (2000); normalisation is set by the surface density below.
LF_NODES = np.array([
    [11.5, 0.01], [13.0, 0.02], [14.0, 0.05], [14.2, 0.08], [14.5, 0.04], [15.5, 0.06],
    [16.5, 0.12], [17.2, 0.35], [17.8, 0.9], [18.5, 1.0], [19.5, 1.1], [20.5, 1.25],
    [21.5, 1.4], [22.5, 1.55], [23.5, 1.7], [24.5, 1.8],
])
MAG_RANGE = (11.5, 24.5)
#: Bright-enhanced sample: this fraction of stars drawn uniformly in 12.5 < V < 16.5
#: (the paper's "bright-enhanced" input catalogue over-represents bright stars).
BRIGHT_FRACTION = 0.35
BRIGHT_RANGE = (12.5, 16.5)


@dataclass(frozen=True)
class ClusterModel:
    """King (1962) surface-density profile of the simulated cluster.

    density : stars per arcsec^2 (all magnitudes in MAG_RANGE) at the cluster centre.
    core_arcsec : King core radius (47 Tuc: ~21"). tidal_arcsec : tidal radius.
    centre : (u, v) of the cluster centre in the global frame, arcsec.
    """

    density: float = 16.0
    core_arcsec: float = 21.0
    tidal_arcsec: float = 2500.0
    centre: tuple[float, float] = (4.0, 4.0)

    def surface_density(self, u, v):
        r2 = (np.asarray(u) - self.centre[0]) ** 2 + (np.asarray(v) - self.centre[1]) ** 2
        rc, rt = self.core_arcsec, self.tidal_arcsec
        edge = 1 / np.sqrt(1 + (rt / rc) ** 2)
        prof = (1 / np.sqrt(1 + r2 / rc**2) - edge) ** 2 / (1 - edge) ** 2
        return self.density * prof


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def chip_to_global(chip: str, x, y):
    """Chip pixel (x, y) -> global (u, v) arcsec for the undithered pointing."""
    s = C.PIXEL_SCALE[chip]
    R = _rotation(CHIP_ROTATION_DEG[chip])
    d = np.stack([np.asarray(x, float) - APEX_PIXEL[0], np.asarray(y, float) - APEX_PIXEL[1]])
    uv = s * np.tensordot(R, d, axes=1)
    return uv[0], uv[1]


def global_to_chip(chip: str, u, v, offset=(0.0, 0.0), roll_deg: float = 0.0):
    """Global (u, v) arcsec -> chip pixel (x, y) for a pointing dithered by ``offset``
    (arcsec, the telescope's motion in the global frame) and rolled by ``roll_deg`` about the
    apex."""
    s = C.PIXEL_SCALE[chip]
    uv = np.stack([np.asarray(u, float) - offset[0], np.asarray(v, float) - offset[1]])
    uv = np.tensordot(_rotation(-roll_deg), uv, axes=1)
    d = np.tensordot(_rotation(-CHIP_ROTATION_DEG[chip]), uv, axes=1) / s
    return d[0] + APEX_PIXEL[0], d[1] + APEX_PIXEL[1]


def sample_magnitudes(rng: np.random.Generator, n: int, bright_enhanced: bool = False):
    """Draw ``n`` V magnitudes from the 47 Tuc-like luminosity function."""
    grid = np.linspace(*MAG_RANGE, 2001)
    pdf = np.interp(grid, LF_NODES[:, 0], LF_NODES[:, 1])
    cdf = np.concatenate([[0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    mags = np.interp(rng.random(n), cdf, grid)
    if bright_enhanced:
        pick = rng.random(n) < BRIGHT_FRACTION
        mags[pick] = rng.uniform(*BRIGHT_RANGE, pick.sum())
    return mags


@dataclass
class ChipStars:
    """The stars that fall on one chip (with margin): global ids, (u, v) arcsec, V mags."""

    chip: str
    star_id: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mag: np.ndarray


def star_field(seed: int, chips, cluster: ClusterModel, bright_enhanced: bool = False,
               chip_scale: dict | None = None):
    """Generate the field chip by chip: {chip: ChipStars}. Deterministic under ``seed``.

    Stars are drawn by thinning a homogeneous Poisson process over each chip's footprint (plus
    margin) with the King profile (times ``chip_scale[chip]`` <= 1 where given: a field whose
    chips are not on one King profile); chips do not overlap, so together they form one global
    field. Star ids are unique over the data set (chip number * 10^7 + index).
    """
    out = {}
    for chip in chips:
        rng = np.random.default_rng([seed, 7919, C.DETECTOR_NUMBER[chip]])
        lo, hi = -MARGIN_PX, C.CHIP_SIZE - 1 + MARGIN_PX
        area = (hi - lo) ** 2 * C.PIXEL_SCALE[chip] ** 2
        cu, cv = chip_to_global(chip, np.array([lo, hi, lo, hi]), np.array([lo, lo, hi, hi]))
        # the King profile falls with radius: its maximum over the (axis-aligned) footprint is
        # at the footprint point nearest the cluster centre
        dmax = float(cluster.surface_density(np.clip(cluster.centre[0], cu.min(), cu.max()),
                                             np.clip(cluster.centre[1], cv.min(), cv.max())))
        n = rng.poisson(dmax * area)
        x = rng.uniform(lo, hi, n)
        y = rng.uniform(lo, hi, n)
        u, v = chip_to_global(chip, x, y)
        keep = rng.random(n) < cluster.surface_density(u, v) / dmax * (chip_scale or {}).get(chip, 1.0)
        u, v = u[keep], v[keep]
        mags = sample_magnitudes(rng, keep.sum(), bright_enhanced)
        ids = C.DETECTOR_NUMBER[chip] * 10_000_000 + np.arange(keep.sum())
        out[chip] = ChipStars(chip, ids, u, v, mags)
    return out


@dataclass(frozen=True)
class Dithers:
    """Per-exposure pointing: offsets (arcsec) in the global frame and roll (deg)."""

    offset_u: np.ndarray
    offset_v: np.ndarray
    roll_deg: np.ndarray


def gilliland_dithers(seed: int, n: int, max_offset_arcsec: float = 2 * C.PIXEL_SCALE["PC1"],
                      roll_sigma_deg: float = 5e-4) -> Dithers:
    """Quasi-random sub-pixel dithers like PID 8267: a scrambled Halton sequence filling a disk
    of radius ``max_offset_arcsec`` (2 PC px = 1 WF px), plus a small Gaussian roll jitter.
    Exposure 0, the reference, is undithered."""
    from scipy.stats import qmc

    pts = qmc.Halton(d=2, scramble=True, seed=np.random.default_rng([seed, 104729])).random(4 * n)
    pts = 2 * pts - 1
    pts = pts[np.hypot(pts[:, 0], pts[:, 1]) <= 1][: n - 1] * max_offset_arcsec
    rng = np.random.default_rng([seed, 15485863])
    roll = rng.normal(0, roll_sigma_deg, n)
    roll[0] = 0.0
    return Dithers(np.concatenate([[0.0], pts[:, 0]]), np.concatenate([[0.0], pts[:, 1]]), roll)
