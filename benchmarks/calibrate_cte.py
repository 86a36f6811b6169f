"""Calibrate the simulator's CTE trap model (:mod:`starcenter.cubes.cte`) on WFPC2's published
photometric CTE, and print what it does to a star's centre (SIMULATION: noiseless WF3 F555W stars).

For each star count (300 .. 3e4 e-) and background (1 .. 30 e-/px) a star at row ~790 goes through
the readout; its loss is the charge missing from its 5x5 box (the background's own readout
subtracted) and is compared with Dolphin's (2002) formula at row 800, 1999 July. ``--fit`` fits
the trap density and BETA (least squares in magnitudes) and prints them for the module's constants;
without it the module's constants are scored. The centroid shift (5x5 first moment, mpix, +y is
away from the readout) is printed beside: photometry does not constrain it (see the module).

    python benchmarks/calibrate_cte.py [--fit]
"""

from __future__ import annotations

import argparse

import numpy as np

from starcenter.cubes import cte
from starcenter.cubes.sim.detector import render_stars
from starcenter.cubes.sim.optics import PSFParams, get_epsf

COUNTS = (300.0, 1e3, 3e3, 1e4, 3e4)
BACKGROUNDS = (1.0, 3.0, 10.0, 30.0)
ROW, COLUMN, ROWS = 789.3, 7.2, 800


def star_effect(counts, background, traps, beta, row=ROW, mjd=cte.CALIBRATION_MJD):
    """(loss in mag, centroid shift in mpix) of one star of ``counts`` e- on ``background`` e-/px."""
    shape = (ROWS, 15)
    star = render_stars(shape, [COLUMN], [row], [counts], get_epsf(PSFParams("WF3", "F555W")))
    sky = np.full(shape, background)
    after = cte.readout(star + sky, mjd, traps, beta) - cte.readout(sky, mjd, traps, beta)
    iy, ix = int(round(row)), int(round(COLUMN))
    box = np.s_[iy - 2:iy + 3, ix - 2:ix + 3]
    y = np.arange(ROWS)[:, None] * np.ones(shape)
    before_c = (star[box] * y[box]).sum() / star[box].sum()
    after_c = (after[box] * y[box]).sum() / after[box].sum()
    kept = max(after[box].sum() / star[box].sum(), 1e-3)  # a star all but lost: 7.5 mag
    return -2.5 * np.log10(kept), 1e3 * (after_c - before_c)


def dolphin(counts, background, y=800.0, mjd=cte.CALIBRATION_MJD):
    """Dolphin's loss (mag) of a star of ``counts`` true e-: his formula takes the measured counts,
    so it is solved for them (fixed point)."""
    loss = 0.0
    for _ in range(50):
        loss = cte.dolphin_loss_mag(counts * 10 ** (-0.4 * loss), background, y, mjd)
    return float(loss)


def grid(traps, beta):
    """Model loss (mag) and shift (mpix), and Dolphin's loss (mag), on COUNTS x BACKGROUNDS."""
    model = np.array([[star_effect(c, b, traps, beta) for b in BACKGROUNDS] for c in COUNTS])
    target = np.array([[dolphin(c, b) for b in BACKGROUNDS] for c in COUNTS])
    return model[..., 0], model[..., 1], target


def fit():
    from scipy.optimize import least_squares

    def residual(p):
        loss, _, target = grid(np.exp(p[0]), p[1])
        return (loss - target).ravel()

    res = least_squares(residual, [np.log(cte.TRAPS_PER_ROW_1999), cte.BETA], bounds=([-8, 0.2], [2, 0.9]))
    return float(np.exp(res.x[0])), float(res.x[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the trap density and BETA")
    args = parser.parse_args(argv)
    traps, beta = fit() if args.fit else (cte.TRAPS_PER_ROW_1999, cte.BETA)
    loss, shift, target = grid(traps, beta)
    print(f"SIMULATION, WF3 F555W star at row {ROW}, 1999 July (MJD {cte.CALIBRATION_MJD:.0f}); "
          f"traps per row {traps:.4g}, beta {beta:.3f}, tau {cte.TAU_PX} px, shares {cte.SHARE}")
    print("counts e- | background e-/px: loss mag model / Dolphin 2002 ; centroid shift mpix")
    for i, c in enumerate(COUNTS):
        cells = [f"{b:>4g}: {loss[i, j]:.3f}/{target[i, j]:.3f} ; {shift[i, j]:+6.1f}"
                 for j, b in enumerate(BACKGROUNDS)]
        print(f"{c:>7g} | " + " | ".join(cells))
    print(f"rms model - Dolphin: {np.sqrt(np.mean((loss - target) ** 2)):.3f} mag")


if __name__ == "__main__":
    main()
