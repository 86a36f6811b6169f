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

(zero mean over a pixel: no shift of the frame). Where the bias changes across the chip, a_k and
b_k are polynomials of order ``order`` in the chip position: 2 cos(2 pi k phi') and 2 sin(...) of
every star are fitted by least squares on the monomials d of (u, v) = (x, y) / 400 - 1 (order 0:
their means). A harmonic is kept only where it is significant: under a uniform density
(a^T G a + b^T G b) / 2, G = sum d d^T, is chi-square with 2 m degrees of freedom (m monomials;
order 0: (a_k^2 + b_k^2) N / 2, 2 degrees), and a harmonic with p >= ``p_value`` is set to zero,
so unbiased centres are left as they are. The correction's statistical uncertainty at a star is
sqrt(sum_kept 2 d^T G^-1 d / (2 pi k)^2) px (order 0: sqrt(sum_kept 2 / (N (2 pi k)^2))).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes.constants import CHIP_SIZE

#: Fourier harmonics of the phase density fitted, and the p-value under which one is kept.
HARMONICS, P_VALUE = 3, 1e-3
#: one correction per exposure, or one per chip over the whole store
POOLS = ("exposure", "store")
#: Polynomial order in the chip position of the coefficients. Measured (SIMULATION, library ePSF,
#: bright stars after a cubic per exposure, benchmarks/bench_phase.py, per exposure): WF3 -12 um
#: 83 / 70 mpix raw, 54 / 31 at order 0, 35 / 26 at order 1; WF3 +17 um 44 / 33, 46 / 32, 28 / 32.
ORDER = 1


def fractional(x) -> np.ndarray:
    """The fractional pixel (pixel phase) x - round(x) in [-0.5, 0.5), px."""
    x = np.asarray(x, float)
    return x - np.floor(x + 0.5)


def first_harmonic(x) -> float:
    """a1 of the density of the pixel phases of positions ``x`` (px): 2 mean cos(2 pi phase); 0 for
    uniform phases, < 0 when the positions are pushed away from pixel centres."""
    return float(2 * np.mean(np.cos(2 * np.pi * fractional(x))))


def usable(xy, sigma=None, flags=None) -> np.ndarray:
    """(..., star) centres a phase density is fitted on: finite, unflagged (``flags`` 0), no
    infinite ``sigma`` (the stage and the evaluation's cross-validated check use the same)."""
    ok = np.all(np.isfinite(xy), axis=-1)
    if flags is not None:
        ok &= np.asarray(flags) == 0
    if sigma is not None:
        ok &= ~np.any(np.isinf(sigma), axis=-1)
    return ok


def design(xy: np.ndarray, order: int) -> np.ndarray:
    """(..., m) monomials u^i v^j, i + j <= order, of the chip position (u, v) = xy / 400 - 1."""
    uv = np.asarray(xy, float) / (CHIP_SIZE / 2) - 1.0
    return np.stack([uv[..., 0] ** (d - j) * uv[..., 1] ** j for d in range(order + 1) for j in range(d + 1)],
                    axis=-1)


def normal_sums(xy: np.ndarray, ok: np.ndarray, harmonics: int, order: int):
    """Least-squares sums of centres (exposure, star, 2) px where ``ok``: G (exposure, m, m) =
    sum d d^T and R (exposure, axis, 2, m, harmonic) = sum d 2 (cos, sin)(2 pi k phase), k = 1.."""
    xy = np.where(np.asarray(ok, bool)[..., None], np.asarray(xy, float), np.nan)
    good = np.all(np.isfinite(xy), axis=-1)
    d = np.where(good[..., None], design(np.nan_to_num(xy), order), 0.0)
    t = 2 * np.pi * np.arange(1, harmonics + 1) * np.nan_to_num(fractional(xy))[..., None]
    cs = np.where(good[..., None, None, None], 2 * np.stack([np.cos(t), np.sin(t)], axis=-2), 0.0)
    return np.einsum("esm,esn->emn", d, d), np.einsum("esm,esacK->eacmK", d, cs)


def pooled(g: np.ndarray, r: np.ndarray, pool: str):
    """The sums per exposure, or (pool "store") summed over the store for every exposure."""
    if pool == "store":
        return np.broadcast_to(g.sum(axis=0), g.shape), np.broadcast_to(r.sum(axis=0), r.shape)
    return g, r


def coefficients(g: np.ndarray, r: np.ndarray, p_value: float = P_VALUE):
    """(a, b, p) from :func:`normal_sums`: the density's Fourier coefficients as polynomials
    (exposure, axis, m, harmonic), zero where not significant, and each harmonic's chi-square p
    (exposure, axis, harmonic) under a uniform density (1 with fewer stars than monomials)."""
    from scipy.stats import chi2

    m = g.shape[-1]
    solvable = np.linalg.matrix_rank(g) == m
    gi = np.linalg.pinv(np.where(solvable[:, None, None], g, np.eye(m)))
    ab = np.einsum("emn,eacnK->eacmK", gi, r)
    stat = np.einsum("eacmK,emn,eacnK->eaK", ab, g, ab) / 2
    p = np.where(solvable[:, None, None], chi2.sf(stat, 2 * m), 1.0)
    ab = np.where((p < p_value)[:, :, None, None, :], ab, 0.0)
    return ab[:, :, 0], ab[:, :, 1], p


def correction(phase, a, b) -> np.ndarray:
    """The shift c(phase) (px) that makes the phases uniform; ``a``, ``b`` (the coefficients at each
    centre) broadcast against ``phase`` with the harmonic last."""
    k = np.arange(1, np.shape(a)[-1] + 1)
    t = 2 * np.pi * k * np.asarray(phase, float)[..., None]
    return np.sum((a * np.sin(t) - b * np.cos(t)) / (2 * np.pi * k), axis=-1)


def apply(xy: np.ndarray, a: np.ndarray, b: np.ndarray, g: np.ndarray, order: int):
    """(corrected xy, the correction's 1-sigma) (exposure, star, 2) px of centres ``xy`` with the
    coefficients of :func:`coefficients` and the sums ``g`` they came from."""
    xy = np.asarray(xy, float)
    good = np.all(np.isfinite(xy), axis=-1)
    d = design(np.nan_to_num(xy), order)
    m = g.shape[-1]
    gi = np.linalg.pinv(np.where((np.linalg.matrix_rank(g) == m)[:, None, None], g, np.eye(m)))
    leverage = np.einsum("esm,emn,esn->es", d, gi, d)  # d^T G^-1 d
    k = np.arange(1, a.shape[-1] + 1)
    out, sig = xy.copy(), np.zeros(xy.shape)
    for ax in range(2):
        ak, bk = np.einsum("esm,emK->esK", d, a[:, ax]), np.einsum("esm,emK->esK", d, b[:, ax])
        out[..., ax] += np.where(good, correction(fractional(xy[..., ax]), ak, bk), 0.0)
        kept = np.any((a[:, ax] != 0) | (b[:, ax] != 0), axis=1)  # (exposure, harmonic)
        per = np.sum(np.where(kept, 2.0 / (2 * np.pi * k) ** 2, 0.0), axis=-1)
        sig[..., ax] = np.sqrt(per[:, None] * np.maximum(leverage, 0))
    return out, sig


def self_calibrated(xy, usable=None, harmonics: int = HARMONICS, p_value: float = P_VALUE,
                    pool: str = "exposure", order: int = ORDER, fit_on=None):
    """In memory, one chip: centres ``xy`` (exposure, star, 2) px corrected as the stage does.

    ``usable`` (exposure, star) picks the centres the density is fitted on (default: every finite
    one); ``fit_on`` (exposure, star), a subset of them, fits on some stars and corrects all (a
    cross-validated check: fit on half the stars, test the other half). Returns (corrected xy,
    the correction's 1-sigma (exposure, star, 2) px).
    """
    xy = np.asarray(xy, float)
    ok = np.all(np.isfinite(xy), axis=-1) if usable is None else np.asarray(usable, bool)
    ok = ok if fit_on is None else ok & np.asarray(fit_on, bool)
    g, r = pooled(*normal_sums(xy, ok, harmonics, order), pool)
    a, b, _ = coefficients(g, r, p_value)
    return apply(xy, a, b, g, order)


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
