"""Compare the physical-optics ePSF with REAL star profiles: the ω Cen F555W exposure
u40x010hm_c0f.fits (1997-06-13, 100 s) shipped in the stsci.tools 4.3.1 wheel.

For bright, isolated, unsaturated stars in the central third of each chip it fits x, y, flux
and sky on 5x5 pixels with model ePSFs at several secondary-mirror despace values and prints,
per chip and despace, the median peak-pixel fraction (real peak / fitted flux, and the model's
at the same sub-pixel phases) and the median quality of fit q. The despace with the lowest q is
the model focus that best matches the real exposure. Real data; no simulation involved.

    python benchmarks/compare_real_profiles.py
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

from starcenter.cubes import constants as C
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.classical.psffit import fit_stars
from starcenter.cubes.sim.optics import PSFParams, get_epsf

DESPACES = (-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


def real_exposure_path() -> str:
    import stsci.tools

    return os.path.join(os.path.dirname(stsci.tools.__file__), "tests", "data", "u40x010hm_c0f.fits")


def main():
    path = real_exposure_path()
    with fits.open(path) as hdul:
        cube = hdul[0].data.astype(float)
        h = hdul[0].header
    print(f"REAL DATA: {os.path.basename(path)} {h['FILTNAM1']} {h['EXPTIME']} s, "
          f"MJD {h['EXPSTART']:.3f}, ATODGAIN {h['ATODGAIN']}")
    print(f"{'chip':4} {'stars':>5} " + " ".join(f"{'q@' + format(d, '+.0f'):>8}" for d in DESPACES)
          + f" {'peak real':>10} {'peak model(0um)':>16}")
    for k, chip in enumerate(C.CHIPS):
        img = cube[k]
        gain, rn = C.GAIN[7][chip], C.READ_NOISE[7][chip]
        pk = find_peaks(img, None, gain, rn, threshold=10, saturation_dn=h["SATURATE"] - 400)
        sel = (~pk.saturated) & (pk.x > 267) & (pk.x < 533) & (pk.y > 267) & (pk.y < 533)
        sel &= (pk.height > 150) & (pk.height + pk.sky < 3000)
        tree = cKDTree(np.c_[pk.x, pk.y])
        n_near = np.array([len(v) for v in tree.query_ball_point(np.c_[pk.x, pk.y], 6.0)])
        sel &= n_near == 1
        qs, peaks_model = [], None
        for d in DESPACES:
            e = get_epsf(PSFParams(chip, "F555W", d))
            r = fit_stars(img, pk.x[sel], pk.y[sel], e, gain, rn)
            ok = r.flags == 0
            qs.append(np.median(r.q[ok]))
            if d == 0.0:
                peak_real = img[pk.y[sel], pk.x[sel]][ok] - r.sky[ok]
                frac_real = peak_real / r.flux[ok]
                frac_model = e.evaluate(pk.x[sel][ok] - r.x[ok], pk.y[sel][ok] - r.y[ok])
                peaks_model = (np.median(frac_real), np.median(frac_model), ok.sum())
        print(f"{chip:4} {peaks_model[2]:5d} " + " ".join(f"{q:8.4f}" for q in qs)
              + f" {peaks_model[0]:10.3f} {peaks_model[1]:16.3f}")


if __name__ == "__main__":
    main()
