"""Print the physical-optics ePSF against TinyTim 7.5 (chip centre, zero despace, G5V).

Default: peak-pixel fraction and encircled energy at detector sampling, both normalized to the flux
within 8 px. The same comparison is asserted (10%) in tests/test_optics.py.

``--orientation``: the comparison that radial profiles cannot make. TinyTim's 4x PSF (X4, pixel-
integrated here with the same trapezoid and charge-diffusion kernel as ours) against ours under the
eight rotations / transpositions of the array (L1 distance of the normalized central 33 x 33
samples, smallest first), and the core's second moments xx - yy and xy (px^2, within 2.5 px):
which way the astigmatism points.

    python benchmarks/validate_tinytim.py [--orientation] [path/to/tinytim75_wfpc2_G5V_psfs.fits]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from starcenter.cubes import constants as C
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.sim.optics import PSFParams, get_epsf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_optics import profile  # noqa: E402

DEFAULT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "tinytim"
           / "tinytim75_wfpc2_G5V_psfs.fits")


def tinytim_epsf(hdul, chip: str, filt: str, half_px: int = 12) -> EffectivePSF:
    """TinyTim's chip-centre PSF as a 4x ePSF: its X4 sub-pixels (PSF centre on sub-pixel N/2)
    integrated over a pixel by the trapezoid rule, convolved with the charge-diffusion kernel and
    cut to +-``half_px`` px."""
    from scipy.ndimage import convolve

    x4 = hdul[f"{chip}_{filt}_X4"].data[2].astype(float)
    tr = np.array([0.5, 1, 1, 1, 0.5]) / 4
    e = convolve(convolve(x4, tr[None, :], mode="constant"), tr[:, None], mode="constant")
    kern = np.zeros((9, 9))
    kern[::4, ::4] = C.CHARGE_DIFFUSION
    e = convolve(e, kern, mode="constant")
    c, h = x4.shape[0] // 2, 4 * half_px
    return EffectivePSF(e[c - h:c + h + 1, c - h:c + h + 1], 4).normalized()


def core_moments(data: np.ndarray, oversampling: int = 4, radius_px: float = 2.5) -> tuple[float, float]:
    """xx - yy and xy (px^2) of an ePSF's samples within ``radius_px`` of its centre."""
    n = data.shape[0]
    yy, xx = (np.indices(data.shape) - (n - 1) / 2) / oversampling
    w = data * (np.hypot(xx, yy) < radius_px)
    return float((w * (xx * xx - yy * yy)).sum() / w.sum()), float((w * xx * yy).sum() / w.sum())


def orientation(path=DEFAULT, half: int = 16) -> None:
    print("== TinyTim 7.5 against the poppy model (chip centre, zero despace; both 4x ePSFs) ==\n"
          "| chip | filter | xx-yy, xy TinyTim | xx-yy, xy ours | L1 after rotating ours (best first) |\n"
          "|---|---|---|---|---|")
    with fits.open(path) as hdul:
        for filt in ("F555W", "F814W"):
            for chip in C.CHIPS:
                tt = tinytim_epsf(hdul, chip, filt).data
                ours = get_epsf(PSFParams(chip, filt)).data
                t, o = (a[a.shape[0] // 2 - half:a.shape[0] // 2 + half + 1] for a in (tt, ours))
                t, o = (a[:, a.shape[1] // 2 - half:a.shape[1] // 2 + half + 1] for a in (t, o))
                t, o = t / t.sum(), o / o.sum()
                cases = sorted((float(np.abs((np.rot90(o, k).T if tp else np.rot90(o, k)) - t).sum()),
                                f"rot{90 * k}{'+T' if tp else ''}") for k in range(4) for tp in (False, True))
                mt, mo = core_moments(tt), core_moments(ours)
                print(f"| {chip} | {filt} | {mt[0]:+.3f}, {mt[1]:+.3f} | {mo[0]:+.3f}, {mo[1]:+.3f} | "
                      + ", ".join(f"{n} {d:.3f}" for d, n in cases[:4]) + " |")


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
    args = sys.argv[1:]
    if args[:1] == ["--orientation"]:
        orientation(*args[1:])
    else:
        main(*args)
