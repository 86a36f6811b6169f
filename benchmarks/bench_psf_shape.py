"""Benchmark: which PSF model do the REAL WF stars ask for? (REAL DATA, or a SIMULATION mirror).

The classical fit and the networks leave the REAL omega Cen WF centres bunched at the pixel edges
(phase density first harmonic a1 = -0.3 ... -0.6); the exposure's `simulate --like` mirror does not
(bench_phase.py control). This benchmark puts model variants beside the data, on the bright isolated
stars within ``--radius`` px of the chip centre (where the chip-centre ePSF holds):

- fit-free: the distribution of the peak-pixel fraction of the sky-subtracted 5x5 box and of the
  second-brightest over the brightest pixel (stars >= 1.5e4 e-) against the model's over uniform
  phases; D = largest quantile difference (5 ... 95 %). No centring is involved.
- fitted: median q (sum |residual| / flux) and a1 x / y of every isolated star fitted with it.

A variant is ``DESPACE[:ASTIG[:BLUR[:INTRAPIXEL]]]``: secondary-mirror despace (um); ASTIG -1 turns
the chip's astigmatism by 90 deg (TinyTim's orientation on PC1 and WF3, validate_tinytim.py
--orientation); BLUR a Gaussian sub-pixel blur (px: jitter, or charge diffusion that is continuous
rather than the 3x3 kernel's one-pixel taps); INTRAPIXEL A a pixel response 1 - A (2u)^2 across the
pixel (u from -0.5 to 0.5; Lauer 1999's WF effect). ``tinytim``: TinyTim's chip-centre zero-despace
PSF (needs ../shared).

    python benchmarks/bench_psf_shape.py /tmp/realgen2/real-fitted.zarr --chips WF3
    python benchmarks/bench_psf_shape.py /tmp/like.zarr --chips WF3 --variants 13.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: quantiles compared (fit-free statistics)
QUANTILES = np.linspace(0.05, 0.95, 19)
#: the default variants: as modelled, the astigmatism turned, sub-pixel blur, intrapixel response
VARIANTS = ("tinytim", "0", "10", "10:-1", "10:1:0.2", "10:-1:0.2", "10:-1:0.2:0.6", "10:-1:0.25:0.9", "-5")


def variant_epsf(spec: str, chip: str, filt: str):
    """The ePSF of one variant (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    from starcenter.cubes.classical.epsf import EffectivePSF
    from starcenter.cubes.sim import optics as O

    if spec == "tinytim":
        from astropy.io import fits
        from validate_tinytim import DEFAULT, tinytim_epsf

        with fits.open(DEFAULT) as hdul:
            return tinytim_epsf(hdul, chip, filt)
    given = [float(v) for v in spec.split(":")]
    f, astig, blur, amp = given + [1.0, 0.0, 0.0][len(given) - 1:]  # the defaults of what is not given
    p = O.PSFParams(chip, filt, f)
    z = O.zernike_coefficients(p)
    z[4:6] *= astig  # Noll 5, 6: the two astigmatisms
    sens = (lambda u: 1 - amp * (2 * u) ** 2) if amp else None
    e = O.pixelate(O.fine_psf(p, coefficients=z), p.oversampling, sensitivity=sens)
    if blur:
        e = EffectivePSF(gaussian_filter(e.data, blur * e.oversampling, mode="constant"), e.oversampling)
    return e.normalized()


def peak_statistics(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak-pixel fraction and second-brightest / brightest pixel of (n, 5, 5) sky-free boxes."""
    flat = boxes.reshape(len(boxes), -1)
    s = np.sort(flat, axis=1)[:, ::-1]
    return s[:, 0] / flat.sum(axis=1), s[:, 1] / s[:, 0]


def model_statistics(epsf, n_phase: int = 12):
    """:func:`peak_statistics` of an ePSF's 5x5 pixel stamps over a uniform grid of phases."""
    ph = (np.arange(n_phase) + 0.5) / n_phase - 0.5
    return peak_statistics(np.array([epsf.pixel_stamp(px, py, half=2) for px in ph for py in ph]))


def chip_stars(store: Path, chip: str, radius: float):
    """(image, gain, read noise, isolated stars' peak pixels within ``radius`` px of the centre,
    the fit-free statistics of the bright ones) of a store's first exposure."""
    from starcenter.cubes import store as st
    from starcenter.cubes.classical.focus import select_stars
    from starcenter.cubes.classical.psffit import fit_stars
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    ex = st.open_group(store, "exposures")
    filt = ex.attrs.get("filter", "F555W")
    k = [str(c) for c in ex["chip"].values].index(chip)
    img, dq = ex["image"].values[0, k], ex["dq"].values[0, k]
    gain, rn = float(ex["gain"].values[k]), float(ex["read_noise"].values[k])
    s = select_stars(img, dq, gain, rn, get_epsf(PSFParams(chip, filt)), min_snr=20, max_stars=3000,
                     isolation_px=5)
    near = np.hypot(s.ix - 400, s.iy - 400) < radius
    ix, iy = s.ix[near], s.iy[near]
    r = fit_stars(img, ix, iy, get_epsf(PSFParams(chip, filt, 10.0)), gain, rn)  # for sky and flux
    b = (r.flags == 0) & np.isfinite(r.x) & (r.flux * gain > 1.5e4)
    boxes = np.array([img[y - 2:y + 3, x - 2:x + 3] - sky for x, y, sky in zip(ix[b], iy[b], r.sky[b])])
    return img, gain, rn, filt, ix, iy, peak_statistics(boxes)


def compare(store: Path, chips: list[str], radius: float, variants: list[str]) -> None:
    from starcenter.cubes import store as st
    from starcenter.cubes.classical.phase import first_harmonic
    from starcenter.cubes.classical.psffit import fit_stars

    kind = "SIMULATION" if st.has_group(store, "truth") else "REAL DATA"
    for chip in chips:
        img, gain, rn, filt, ix, iy, (rp, rr) = chip_stars(store, chip, radius)
        print(f"\n== {kind} {store} {chip} {filt}: {len(ix)} isolated stars within {radius:g} px of the "
              f"centre, {len(rp)} >= 1.5e4 e- ==\n"
              f"peak fraction 10/50/90 %: {np.round(np.quantile(rp, [.1, .5, .9]), 3)}; "
              f"second / peak: {np.round(np.quantile(rr, [.1, .5, .9]), 3)}\n"
              "| variant | D peak | D 2nd/peak | model peak 10/50/90 % | median q | a1 x / y |\n"
              "|---|---|---|---|---|---|")
        for spec in variants:
            e = variant_epsf(spec, chip, filt)
            mp, mr = model_statistics(e)
            dp, dr = (np.abs(np.quantile(a, QUANTILES) - np.quantile(m, QUANTILES)).max() for a, m in
                      ((rp, mp), (rr, mr)))
            r = fit_stars(img, ix, iy, e, gain, rn)
            ok = (r.flags == 0) & np.isfinite(r.x)
            a1 = [first_harmonic(v[ok]) for v in (r.x, r.y)]
            print(f"| {spec} | {dp:.3f} | {dr:.3f} | {np.round(np.quantile(mp, [.1, .5, .9]), 3)} | "
                  f"{np.median(r.q[ok]):.4f} | {a1[0]:+.2f} / {a1[1]:+.2f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="a store with exposures (REAL, or a `simulate --like` mirror)")
    ap.add_argument("--chips", default="PC1,WF2,WF3,WF4")
    ap.add_argument("--radius", type=float, default=300.0, help="px from the chip centre")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    compare(args.store, args.chips.split(","), args.radius, args.variants.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
