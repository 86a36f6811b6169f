"""Pixel-phase self-calibration kernels: the fractional-pixel density's Fourier coefficients and
the shift that makes it uniform (the ``phase`` stage, :mod:`starcenter.cubes.stages.phase`,
writes the corrected centres of a store; the evaluation checks them cross-validated).

Stars fall at random on the pixel grid, so the fractional pixels (pixel phases) of unbiased centres
are uniform; a pixel-phase bias (an ePSF that is not the exposure's) bunches them (Anderson &
King 1999, PASP 111, 1095 used this histogram for WFPC2's 34th-row error). The density of the
measured phases phi' is fitted by a short Fourier series, p(phi') = 1 + sum_k a_k cos(2 pi k phi')
+ b_k sin(2 pi k phi'), a_k = 2 <cos 2 pi k phi'>, b_k = 2 <sin 2 pi k phi'>; its cumulative
distribution maps each measured phase to the phase it would have under a uniform density, so every
centre moves by

    c(phi') = sum_k [a_k sin(2 pi k phi') - b_k cos(2 pi k phi')] / (2 pi k)    (pixels)

(zero mean over a pixel: no shift of the frame). A harmonic is kept only where it is significant:
under a uniform density (a_k^2 + b_k^2) N / 2 is chi-square with 2 degrees of freedom, and a
harmonic with p >= ``p_value`` is set to zero, so unbiased centres are left as they are. Its
statistical uncertainty is sqrt(sum_kept 2 / (N (2 pi k)^2)) px.
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes.constants import CHIP_SIZE

#: Fourier harmonics of the phase density fitted, and the p-value under which one is kept.
HARMONICS, P_VALUE = 3, 1e-3
#: one correction per exposure, or one per chip over the whole store
POOLS = ("exposure", "store")


def fractional(x) -> np.ndarray:
    """The fractional pixel (pixel phase) x - round(x) in [-0.5, 0.5), px."""
    x = np.asarray(x, float)
    return x - np.floor(x + 0.5)


def density_sums(phase: np.ndarray, harmonics: int) -> np.ndarray:
    """(2, harmonics) sums of cos and sin of 2 pi k phase over the phases given (k = 1..)."""
    t = 2 * np.pi * np.arange(1, harmonics + 1)[:, None] * np.asarray(phase, float)[None, :]
    return np.stack([np.cos(t).sum(axis=1), np.sin(t).sum(axis=1)])


def coefficients(sums: np.ndarray, n, p_value: float = P_VALUE):
    """(a, b, p) from :func:`density_sums` over ``n`` phases: the density's Fourier coefficients,
    zero where not significant, and each harmonic's chi-square p under a uniform density."""
    n = np.maximum(np.asarray(n, float), 1.0)[..., None]
    a, b = 2 * sums[..., 0, :] / n, 2 * sums[..., 1, :] / n
    p = np.exp(-(a ** 2 + b ** 2) * n / 4)  # chi-square(2) survival of (a^2 + b^2) N / 2
    keep = p < p_value
    return np.where(keep, a, 0.0), np.where(keep, b, 0.0), p


def correction(phase, a, b) -> np.ndarray:
    """The shift c(phase) (px) that makes the phases uniform; ``a``, ``b`` broadcast against
    ``phase`` with the harmonic last."""
    k = np.arange(1, np.shape(a)[-1] + 1)
    t = 2 * np.pi * k * np.asarray(phase, float)[..., None]
    return np.sum((a * np.sin(t) - b * np.cos(t)) / (2 * np.pi * k), axis=-1)


def correction_sigma(a, b, n) -> np.ndarray:
    """The 1-sigma statistical uncertainty (px) of :func:`correction` at any phase."""
    k = np.arange(1, np.shape(a)[-1] + 1)
    kept = (np.asarray(a) != 0) | (np.asarray(b) != 0)
    var = np.sum(np.where(kept, 2.0 / (2 * np.pi * k) ** 2, 0.0), axis=-1) / np.maximum(np.asarray(n, float), 1)
    return np.sqrt(var)


def region_of(xy: np.ndarray, regions: int) -> np.ndarray:
    """Region index (row-major over a regions x regions grid of the chip) of each centre; -1 where
    it is not finite."""
    ij = np.clip(np.floor(np.nan_to_num(xy, nan=-1.0) * regions / CHIP_SIZE), 0, regions - 1).astype(int)
    return np.where(np.all(np.isfinite(xy), axis=-1), ij[..., 1] * regions + ij[..., 0], -1)


def self_calibrated(xy, usable=None, harmonics: int = HARMONICS, p_value: float = P_VALUE,
                    pool: str = "exposure", regions: int = 1, fit_on=None):
    """In memory, one chip: centres ``xy`` (exposure, star, 2) px corrected as the stage does.

    ``usable`` (exposure, star) picks the centres the density is fitted on (default: every finite
    one); ``fit_on`` (exposure, star), a subset of them, fits on some stars and corrects all (a
    cross-validated check: fit on half the stars, test the other half). Returns (corrected xy,
    the correction's 1-sigma (exposure, star, 2) px).
    """
    xy = np.asarray(xy, float)
    ok = np.all(np.isfinite(xy), axis=-1) if usable is None else np.asarray(usable, bool)
    ok = ok if fit_on is None else ok & np.asarray(fit_on, bool)
    reg = region_of(xy, regions)
    sums, n = sums_of(xy, ok, reg, harmonics, regions)
    sums, n = pooled(sums, n, pool)
    a, b, _ = coefficients(sums, n[:, :, None], p_value)
    return apply(xy, reg, a, b, n)


def cross_validated(xy, usable=None, **params):
    """Centres (exposure, star, 2) px, each half of the stars (even / odd star index) corrected with
    the coefficients fitted on the other half: what a fractional-pixel check of self-calibrated
    centres must use (centres corrected with their own coefficients are uniform by construction).
    ``params``: those of :func:`self_calibrated`."""
    xy = np.asarray(xy, float)
    ok = np.all(np.isfinite(xy), axis=-1) if usable is None else np.asarray(usable, bool)
    even = np.broadcast_to((np.arange(xy.shape[1]) % 2 == 0)[None, :], ok.shape)
    return np.where(even[..., None], self_calibrated(xy, ok, fit_on=~even, **params)[0],
                    self_calibrated(xy, ok, fit_on=even, **params)[0])


def pooled(sums: np.ndarray, n: np.ndarray, pool: str):
    """The sums and counts per exposure, or (pool "store") summed over the store for every exposure."""
    if pool == "store":
        return np.broadcast_to(sums.sum(axis=0), sums.shape), np.broadcast_to(n.sum(axis=0), n.shape)
    return sums, n


def apply(xy: np.ndarray, reg: np.ndarray, a: np.ndarray, b: np.ndarray, n: np.ndarray):
    """(corrected xy, the correction's sigma) of centres (exposure, star, 2) in regions ``reg``
    with coefficients (exposure, region, axis, harmonic) from ``n`` (exposure, region) centres."""
    rows, r = np.arange(len(xy))[:, None], np.maximum(reg, 0)
    out, sig = xy.copy(), np.zeros(xy.shape)
    for ax in range(2):
        ak, bk = a[rows, r, ax], b[rows, r, ax]
        out[..., ax] += np.where(reg >= 0, correction(fractional(xy[..., ax]), ak, bk), 0.0)
        sig[..., ax] = correction_sigma(ak, bk, n[rows, r])
    return out, sig


def sums_of(xy: np.ndarray, ok: np.ndarray, reg: np.ndarray, harmonics: int, regions: int):
    """(exposure, region, axis, 2, harmonic) density sums and (exposure, region) counts."""
    sums = np.zeros((len(xy), regions ** 2, 2, 2, harmonics))
    n = np.zeros((len(xy), regions ** 2))
    for e in range(len(xy)):
        for r in range(regions ** 2):
            sel = ok[e] & (reg[e] == r)
            n[e, r] = sel.sum()
            for ax in range(2):
                sums[e, r, ax] = density_sums(fractional(xy[e, sel, ax]), harmonics)
    return sums, n
