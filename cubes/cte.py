"""Parallel charge-transfer efficiency (CTE) of the WFPC2 CCDs during readout: a trap model whose
loss depends on the star's charge, the background under it, its row and the date.

Row 0 is read first; a pixel of row ``y`` is clocked through ``y + 1`` rows of traps. Traps
sit at heights in the pixel's volume; a packet of ``q`` e- reaches the volume fraction
``(q / FULL_WELL_E) ** BETA`` (the volume-driven model of Massey et al. 2010, MNRAS 401, 371)
and fills the empty traps below it; filled traps release with the per-transfer probability
``1 - exp(-1 / tau)`` into the packets that follow. So a star's leading (low-y) pixels lose
charge, its trailing side and the rows above it gain it (a centroid shift up the column), a
faint star loses a larger fraction than a bright one, and a background (sky, the unresolved
light of a crowded field, a neighbour below in the column) keeps traps filled and shrinks the
loss. Charge released beyond a star's fitting box is its photometric loss.

The express approximation of pixel-based CTE codes (arctic, Massey et al. 2014): every packet of
a column meets one trap population, ``y + 1`` times the density of one row, whose occupancy is
the column's history (a row's own traps come with that occupancy: those under a uniform sky were
filled while it was exposed, so a flat sky reads out flat). Charge is conserved to ~0.2 % of
what a star loses (the occupancy carried into the next row's larger population).

BETA and the trap density are fitted (``benchmarks/calibrate_cte.py --fit``) so that the 5x5-box
loss of a WF3 star at row ~790 in 1999 July matches WFPC2's photometric CTE (Dolphin 2002, the
formula of the STScI WFPC2 CTE tool, :func:`dolphin_loss_mag`) for 300-3e4 e- on 1-30 e-/px:
rms 0.04 mag; the fitted BETA 0.555 is near the 0.58 Massey et al. found for ACS. One species,
released over TAU_PX = 40 rows, is an assumption: photometry does not say how much of the charge
comes back within a star's fitting box. What follows from the fit is that the charge taken from a
star's leading side moves its centre up the column: at row ~790 in 1999, 0.05-0.08 px for 1e4-3e4
e- stars and 0.2-0.5 px for 300 e- (the benchmark prints the grid), the size of the CTE shifts
reported for HST CCDs (up to ~0.1 px and more for faint stars, ACS ISR 2007-04).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import constants as C

#: Release time constants (in row transfers) of the trap species and their shares of the traps:
#: one species (a second, faster one, fitted with a 40 % share, gave shifts as large; see above).
TAU_PX = (40.0,)
SHARE = (1.0,)
#: Exponent of the volume a packet of q e- fills: (q / full well) ** BETA.
BETA = 0.555
#: Traps per row transfer, all species, on 1999 July 3 (MJD 51362), fitted to Dolphin (2002).
TRAPS_PER_ROW_1999 = 2.665
#: Modified Julian date of the calibration above, and WFPC2's cool-down epoch of Dolphin's time term.
CALIBRATION_MJD = 51362.0
DOLPHIN_ZERO_MJD = 50193.0
#: Trap levels: the charge axis in log steps from 1 e- to the full well.
LEVELS_E = np.concatenate([[0.0], np.logspace(0, np.log10(C.FULL_WELL_E), 24)])


def time_factor(mjd: float) -> float:
    """Dolphin's (2002) growth of the CTE loss with time: 1 + 0.253 t + 0.0082 t^2, t in years
    since MJD 50193 (1996 April 24)."""
    t = (float(mjd) - DOLPHIN_ZERO_MJD) / 365.25
    return 1.0 + 0.253 * t + 0.0082 * t * t


def traps_per_row(mjd: float) -> float:
    """Traps per row transfer (all species) at ``mjd``: the 1999 calibration scaled by Dolphin's time term."""
    return TRAPS_PER_ROW_1999 * time_factor(mjd) / time_factor(CALIBRATION_MJD)


def dolphin_loss_mag(counts, background, y, mjd):
    """WFPC2 parallel (Y) CTE loss in magnitudes of a star of ``counts`` e- on ``background``
    e-/px at row ``y`` (1..800): Dolphin (2002), as the STScI WFPC2 CTE tool gives it (serial CTE
    left out). The calibration target of the trap model; a factor ~1.5 of uncertainty at the
    faint end (Whitmore & Heyer 2002, WFPC2 ISR 2002-03)."""
    counts, background, y = (np.asarray(a, float) for a in (counts, background, y))
    bg = np.sqrt(background**2 + 1.0)
    lbg, lct = np.log(bg) - 1.0, np.log(counts) - 7.0
    c1 = (0.01785 * (0.655 * np.exp(-0.402 * lbg) + 0.345 * np.exp(-0.0156 * (bg - 10.0)))
          * time_factor(mjd) * (y / 800.0))
    c2 = 2.35 * np.exp(-0.517 * lct)
    return np.log(np.exp(c1) * (1.0 + c2) - c2) / 0.476


def readout(electrons: np.ndarray, mjd: float, traps: float | None = None, beta: float = BETA) -> np.ndarray:
    """The image (e-, rows y, columns x; row 0 read first) after parallel readout with the CTE of
    ``mjd`` (or ``traps`` per row transfer and ``beta``: the calibration's free parameters).
    Vectorized over columns, a loop over rows: ~0.1 s for an 800x800 chip."""
    img = np.asarray(electrons, float)
    rho = traps_per_row(mjd) if traps is None else float(traps)
    ny, nx = img.shape
    vol = (LEVELS_E / C.FULL_WELL_E) ** beta
    lo, dv = vol[:-1], np.diff(vol)
    share = np.asarray(SHARE)[:, None, None] * dv[None, :, None]  # (species, level, 1)
    keep = np.exp(-1.0 / np.asarray(TAU_PX))[:, None, None]
    filled = np.zeros((len(TAU_PX), lo.size, nx))  # fraction of each level's traps filled
    out = np.empty_like(img)
    for y in range(ny):
        traps_here = rho * (y + 1) * share
        released = filled * (1.0 - keep)
        q = img[y] + (released * traps_here).sum(axis=(0, 1))
        filled -= released
        reach = np.clip(((np.maximum(q, 0.0) / C.FULL_WELL_E) ** beta - lo[:, None]) / dv[:, None], 0.0, 1.0)
        fill = reach[None] * (1.0 - filled)
        captured = (fill * traps_here).sum(axis=(0, 1))
        scale = np.where(captured > q, q / np.maximum(captured, 1e-300), 1.0)  # never more than q
        filled += fill * scale
        out[y] = q - captured * scale
    return out


def correct(electrons: np.ndarray, mjd: float, iterations: int = 3, trap_scale: float = 1.0) -> np.ndarray:
    """The image before the readout (e-) whose readout with the CTE of ``mjd`` is ``electrons``:
    ``x <- x + (observed - readout(x))`` from ``x = observed`` (the scheme of Anderson & Bedin
    2010, PASP 122, 1035, without their read-noise mitigation: read noise goes through it as if
    it were charge); ``trap_scale`` scales the date's trap density (a model known to be off).
    Three iterations leave ~1 % of the CTE's change in the brightest pixel (a 1e4 e- star at row
    ~700: 320 e- taken, 5 e- left; more iterations do not shrink it)."""
    observed = np.asarray(electrons, float)
    traps = traps_per_row(mjd) * trap_scale
    x = observed.copy()
    for _ in range(iterations):
        x += observed - readout(x, mjd, traps)
    return x
