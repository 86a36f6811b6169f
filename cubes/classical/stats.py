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
