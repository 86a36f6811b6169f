"""Robust statistics shared by every stage and the evaluation (astropy where it has them)."""

from __future__ import annotations

import numpy as np


def clipped_mean(measures, sigma: float = 3.0, maxiters: int = 10):
    """Sigma-clipped mean, rms about it and count along axis 0 (exposures), NaN-aware (astropy).

    Parameters
    ----------
    measures : array_like (exposure, ...)
        Measures (e.g. px); NaN where missing.
    sigma : float
        Clipping threshold (standard deviations about the mean).
    maxiters : int
        Clipping iterations at most.

    Returns
    -------
    mean, rms : numpy.ndarray
        Over the kept measures, same units as ``measures``; NaN where none is kept.
    count : numpy.ndarray of int
        Measures kept.
    """
    from astropy.stats import sigma_clip

    m = sigma_clip(np.ma.masked_invalid(measures), sigma=sigma, maxiters=maxiters, axis=0,
                   cenfunc="mean", stdfunc="std")
    count = (~np.ma.getmaskarray(m)).sum(axis=0)
    mean = np.ma.filled(m.mean(axis=0), np.nan)
    rms = np.ma.filled(m.std(axis=0), np.nan)
    return mean, rms, count


def robust_sigma(values, axis=None):
    """Robust standard deviation: 1.4826 x the median absolute deviation (astropy's mad_std);
    blends and outliers, which dominate an rms, barely move it. Same units as ``values``."""
    from astropy.stats import mad_std

    return mad_std(np.asarray(values, float), axis=axis)


def error_model(residual, sigma, nbins: int = 5, min_per_bin: int = 10):
    """The scale a and floor b (units of ``residual``) of the error model
    sigma_eff^2 = (a sigma)^2 + b^2 that makes ``residual`` / sigma_eff unit-variance.

    The stars are binned by ``sigma`` (quantiles); (a, b) are found (scipy least_squares from
    a = 1, b = 0) so that in every bin the robust standard deviation (mad_std; blends barely move
    it) of residual / sigma_eff is 1. a absorbs a mis-scaled noise model, b what the noise model
    does not know (an ePSF mismatch, pixel-phase bias, crowding). Returns (1, 0) where there are
    too few stars to say.
    """
    from scipy.optimize import least_squares

    r, s = np.asarray(residual, float).ravel(), np.asarray(sigma, float).ravel()
    ok = np.isfinite(r) & np.isfinite(s) & (s > 0)
    r, s = r[ok], s[ok]
    nb = min(nbins, r.size // min_per_bin)
    if nb < 2:
        return 1.0, 0.0
    edges = np.quantile(s, np.linspace(0, 1, nb + 1))
    k = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, nb - 1)
    bins = [k == i for i in range(nb)]
    scale = float(np.median(s))  # b is fitted in units of the typical sigma

    def misfit(p):
        eff = np.sqrt((p[0] * s) ** 2 + (p[1] * scale) ** 2)
        return np.array([robust_sigma(r[m] / eff[m]) - 1 for m in bins])

    fit = least_squares(misfit, [1.0, 0.1], bounds=([1e-3, 0.0], [1e3, 1e3]))
    return float(fit.x[0]), float(fit.x[1] * scale)


def weighted_clipped_mean(measures, sigma_measures, sigma: float = 3.0, maxiters: int = 10):
    """:func:`clipped_mean`'s clipping (astropy, unweighted 3 sigma about the mean), then the
    inverse-variance weighted mean of the kept measures (weights 1 / sigma_measures^2; a measure
    with no finite positive sigma gets no weight). Returns mean, rms (plain scatter of the kept
    measures), count, as clipped_mean."""
    from astropy.stats import sigma_clip

    m = sigma_clip(np.ma.masked_invalid(measures), sigma=sigma, maxiters=maxiters, axis=0,
                   cenfunc="mean", stdfunc="std")
    keep = ~np.ma.getmaskarray(m)
    s = np.asarray(sigma_measures, float)
    w = np.where(keep & np.isfinite(s) & (s > 0), 1.0 / np.where(s > 0, s, 1.0) ** 2, 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sw > 0, (w * np.where(keep, np.ma.getdata(m), 0.0)).sum(axis=0) / sw, np.nan)
    return mean, np.ma.filled(m.std(axis=0), np.nan), keep.sum(axis=0)
