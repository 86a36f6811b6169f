"""Per-star uncertainties of a network's centres: the likelihood loss and the calibration.

A network built with ``uncertainty=True`` outputs (x, y, log sigma_x, log sigma_y) in raster px;
with ``flux=True`` also the flux: (x, y, dlogF, log sigma_x, log sigma_y, log sigma_dlogF), dlogF the
natural log of the star's flux over the classical fit's (the means first, then their log sigmas).
It is trained on the Gaussian negative log-likelihood (:func:`gaussian_nll`), so the sigma it
predicts is its own estimate of each star's error; that estimate is then recalibrated on the
validation split (split conformal calibration, per magnitude bin and axis: the factor that makes
exactly 68.27 % of the validation stars fall within +-1 sigma, :func:`calibrate`), stored in the
model's metadata and applied by ``predict`` (:func:`calibrated_sigma`). The guarantee of the
calibration holds for stars like the validation stars (the training epoch); on another PSF epoch
it is a claim to be checked (benchmarks/bench_uncertainty.py).
"""

from __future__ import annotations

import numpy as np

from starcenter.model import quiet_tensorflow

#: log sigma (log px) is clipped to this range inside the loss: 4.5e-5 .. 2.7 px
LOG_SIGMA_RANGE = (-10.0, 1.0)
#: Two-sided Gaussian coverage of +-1 sigma and +-2 sigma.
NOMINAL = {1: 0.6827, 2: 0.9545}


def gaussian_nll(y_true, y_pred):
    """Mean over stars and outputs of 0.5 ((t - mu) / sigma)^2 + log sigma (the Gaussian negative
    log-likelihood up to a constant); y_true (n, k), y_pred = (mu_1..k, log sigma_1..k)."""
    quiet_tensorflow()
    from keras import ops

    k = y_true.shape[-1]
    mu, log_s = y_pred[:, :k], ops.clip(y_pred[:, k:2 * k], *LOG_SIGMA_RANGE)
    z = (y_true - mu) * ops.exp(-log_s)
    return ops.mean(0.5 * z * z + log_s, axis=-1)


def centre_mae(y_true, y_pred):
    """Mean absolute error (px) of the centre outputs alone (the paper's loss, as a metric)."""
    quiet_tensorflow()
    from keras import ops

    return ops.mean(ops.abs(y_true[:, :2] - y_pred[:, :2]), axis=-1)


def split_outputs(pred: np.ndarray):
    """(means (n, k), raw sigmas (n, k)) of a network's (n, 2k) output: k = 2 (x, y raster px)
    or 3 (and dlogF)."""
    pred = np.asarray(pred, np.float64)
    k = pred.shape[1] // 2
    return pred[:, :k], np.exp(np.clip(pred[:, k:2 * k], *LOG_SIGMA_RANGE))


def calibrate(err: np.ndarray, sigma: np.ndarray, mag: np.ndarray, nbins: int = 4,
              min_per_bin: int = 100) -> dict:
    """Split conformal calibration of sigma on held-out stars.

    err, sigma : (n, k) errors (output - target) and raw sigmas (px; dlogF: natural log);
    mag : (n,) instrumental mag.
    Stars are binned in magnitude (quantile edges, the outer edges open; at most ``nbins``, at
    least ``min_per_bin`` stars each); in each bin and axis the
    factor is the 68.27 % quantile of |err| / sigma (with the finite-sample correction
    ceil((n + 1) q) / n). Returns {"mag_edges", "scale" (bin, output), "n" per bin, "level"}.
    """
    err, sigma, mag = (np.asarray(a, np.float64) for a in (err, sigma, mag))
    ok = np.all(np.isfinite(err) & np.isfinite(sigma) & (sigma > 0), axis=1) & np.isfinite(mag)
    err, sigma, mag = err[ok], sigma[ok], mag[ok]
    nb = max(1, min(nbins, mag.size // min_per_bin))
    edges = np.quantile(mag, np.linspace(0, 1, nb + 1)) if mag.size else np.zeros(nb + 1)
    k = _bin(mag, edges)
    scale = np.ones((nb, err.shape[1]))
    counts = []
    for b in range(nb):
        z = np.abs(err[k == b]) / sigma[k == b]
        n = len(z)
        counts.append(n)
        if n:
            q = min(1.0, np.ceil((n + 1) * NOMINAL[1]) / n)
            scale[b] = np.quantile(z, q, axis=0)
    return {"mag_edges": edges.tolist(), "scale": scale.tolist(), "n": counts, "level": NOMINAL[1],
            "method": "split conformal, 68.27 % quantile of |error| / sigma per magnitude bin and axis"}


def _bin(mag, edges) -> np.ndarray:
    """Bin index of each magnitude; beyond the outer edges: the outer bins."""
    return np.clip(np.searchsorted(np.asarray(edges)[1:-1], mag, side="right"), 0, len(edges) - 2)


def calibrated_sigma(sigma_raw: np.ndarray, mag: np.ndarray, calibration: dict | None) -> np.ndarray:
    """sigma (n, k): the raw sigma times its magnitude bin's factor (no calibration: raw)."""
    sigma_raw = np.asarray(sigma_raw, np.float64)
    if not calibration:
        return sigma_raw
    scale = np.asarray(calibration["scale"])
    return sigma_raw * scale[_bin(np.asarray(mag, np.float64), calibration["mag_edges"])]


def coverage(err: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> float:
    """Fraction of finite (err, sigma) pairs with |err| <= k sigma (NaN if none)."""
    err, sigma = np.asarray(err, float), np.asarray(sigma, float)
    ok = np.isfinite(err) & np.isfinite(sigma)
    return float(np.mean(np.abs(err[ok]) <= k * sigma[ok])) if ok.any() else float("nan")
