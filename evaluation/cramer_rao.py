"""The Cramér–Rao bound on a star's position: the physical limit the paper does not show.

For a star of flux F (e-) on sky B (e-/px) with read noise RN (e-), fitted for (x, y, F, B) over a
box of pixels with the pixel-integrated ePSF g (Mendez, Silva & Lobos 2013, PASP 125, 580; joint
astrometry and photometry: Mendez et al. 2014, PASP 126, 798), the Fisher matrix is
I_jk = sum_i (d mu_i / d theta_j)(d mu_i / d theta_k) / (mu_i + RN^2), mu_i = F g_i + B, and the
bound on x is sqrt((I^-1)_xx). Vectorized over stars; the ePSF is the shared EffectivePSF, or a
per-star mixture of several (the simulator's field-varying ePSF: linear between field nodes).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.stats import robust_sigma


def position_bound(epsf, flux, sky, read_noise, phase_x=0.0, phase_y=0.0,
                   half: int = 2, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Cramér–Rao bounds (px) on x and y for stars of ``flux`` e- at sub-pixel phases
    (phase_x, phase_y), fitting x, y, flux and sky over a (2*half+1)^2 box (5x5 by default).
    ``epsf``: one EffectivePSF, or with ``weights`` (n_psf, n_stars) a sequence of n_psf whose
    per-star weighted sum is each star's ePSF."""
    cov, shape = _covariance(epsf, flux, sky, read_noise, phase_x, phase_y, half, weights)
    return np.sqrt(cov[:, 0, 0]).reshape(shape), np.sqrt(cov[:, 1, 1]).reshape(shape)


def flux_bound(epsf, flux, sky, read_noise, phase_x=0.0, phase_y=0.0,
               half: int = 2, weights=None) -> np.ndarray:
    """Cramér–Rao bound (e-) on the flux of stars of ``flux`` e-, the same joint fit of x, y,
    flux and sky over the (2*half+1)^2 box as :func:`position_bound` (``weights`` as there)."""
    cov, shape = _covariance(epsf, flux, sky, read_noise, phase_x, phase_y, half, weights)
    return np.sqrt(cov[:, 2, 2]).reshape(shape)


def _mixture(epsfs, weights, dx, dy):
    """Value and gradients of the per-star ePSF sum_k weights[k] * epsfs[k] at (dx, dy) (n, ...)."""
    weights = np.asarray(weights, float)
    if weights.shape != (len(epsfs), len(dx)):
        raise ValueError(f"weights have shape {weights.shape}; expected ({len(epsfs)}, {len(dx)}): "
                         "one row per ePSF, one column per star")
    g, gx, gy = (np.zeros(dx.shape) for _ in range(3))
    for e, w in zip(epsfs, weights):
        use = w != 0
        if not use.any():
            continue
        wk = w[use][:, None, None]
        g[use] += wk * e.evaluate(dx[use], dy[use])
        ex_, ey_ = e.gradient(dx[use], dy[use])
        gx[use] += wk * ex_
        gy[use] += wk * ey_
    return g, gx, gy


def _covariance(epsf, flux, sky, read_noise, phase_x, phase_y, half: int, weights=None):
    """((n, 4, 4) inverse Fisher matrices of (x, y, flux, sky), the arguments' broadcast shape)."""
    flux, sky, read_noise, phase_x, phase_y = np.broadcast_arrays(
        *(np.asarray(a, float) for a in (flux, sky, read_noise, phase_x, phase_y)))
    k = np.arange(-half, half + 1)
    dx = k[None, None, :] - phase_x.ravel()[:, None, None]
    dy = k[None, :, None] - phase_y.ravel()[:, None, None]
    dx, dy = np.broadcast_arrays(dx, dy)
    if weights is None:
        g = epsf.evaluate(dx, dy)
        gx, gy = epsf.gradient(dx, dy)
    else:
        g, gx, gy = _mixture(list(epsf), weights, dx, dy)
    F = flux.ravel()[:, None, None]
    mu = F * g + sky.ravel()[:, None, None]
    var = np.clip(mu, 0, None) + read_noise.ravel()[:, None, None] ** 2
    J = np.stack([-F * gx, -F * gy, g, np.ones_like(g)], axis=-1).reshape(len(F), -1, 4)
    W = 1.0 / var.reshape(len(F), -1)
    fisher = np.einsum("npi,np,npj->nij", J, W, J)
    return np.linalg.inv(fisher), flux.shape


def phase_averaged_bound(epsf: EffectivePSF, flux, sky: float, read_noise: float, n: int = 64,
                         seed: int = 0) -> np.ndarray:
    """rms over uniformly random sub-pixel phases of the x bound (px), per flux."""
    rng = np.random.default_rng(seed)
    px, py = rng.uniform(-0.5, 0.5, (2, n))
    flux = np.atleast_1d(np.asarray(flux, float))
    sx, _ = position_bound(epsf, flux[:, None], sky, read_noise, px[None, :], py[None, :])
    return np.sqrt(np.mean(sx**2, axis=1))


def error_over_bound(err, bound) -> float:
    """How far above its bound an estimator is, over stars whose bounds differ: the robust sigma
    (1.4826 MAD) of each error over its own star's bound, 1 for an unbiased estimator that
    reaches the bound. Not robust sigma(err) / rms(bound): the pooled errors of stars with different
    bounds are a scale mixture, whose MAD is smaller than its rms (for an efficient estimator that
    ratio reads 0.97 in a flux bin a factor 3 wide with one bound per flux, 0.86 when the bounds
    also spread 30 % with phase and place on the chip). ``err``, ``bound``: same shape and unit."""
    err, bound = np.asarray(err, float).ravel(), np.asarray(bound, float).ravel()
    if err.shape != bound.shape:
        raise ValueError(f"{err.size} errors but {bound.size} bounds")
    return float(robust_sigma(err / bound))
