"""Print the physical-optics ePSF against TinyTim 7.5 (chip centre, zero despace, G5V):
peak-pixel fraction and encircled energy at detector sampling, both normalized to the flux
within 8 px. The same comparison is asserted (10%) in tests/test_optics.py.

    python benchmarks/validate_tinytim.py [path/to/tinytim75_wfpc2_G5V_psfs.fits]
"""

from __future__ import annotations

import sys
from pathlib import Path

from astropy.io import fits

from starcenter.cubes import constants as C
from starcenter.cubes.sim.optics import PSFParams, get_epsf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_optics import profile  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinytim" / "tinytim75_wfpc2_G5V_psfs.fits"


def main(path=DEFAULT):
    print(f"{'chip':4} {'filter':6} {'peak ours':>9} {'peak TT':>8} " +
          " ".join(f"{'EE' + str(r) + ' ours/TT':>14}" for r in (1, 2, 3, 5)))
    with fits.open(path) as hdul:
        for chip in C.CHIPS:
            for filt in ("F555W", "F814W"):
                tt = hdul[f"{chip}_{filt}_X1"].data[2].astype(float)
                c = tt.shape[0] // 2
                pt, et = profile(tt[c - 12:c + 13, c - 12:c + 13], 12)
                po, eo = profile(get_epsf(PSFParams(chip, filt)).pixel_stamp(0, 0, half=12), 12)
                print(f"{chip:4} {filt:6} {po:9.4f} {pt:8.4f} " +
                      " ".join(f"{eo[r]:6.3f}/{et[r]:6.3f}".rjust(14) for r in (1, 2, 3, 5)))


if __name__ == "__main__":
    main(*sys.argv[1:])
