"""Are the per-star uncertainties right? Coverage, ranking and scale of sigma, per method.

For each centring method with uncertainties -- the classical fit's Fisher sigma (rasters
``prelim_err``), the same through an error model fitted to the repeats (no exact truth needed:
:func:`repeat_error_model`), a network's calibrated sigma (centers/NAME ``sigma``) -- and each
chip, axis and flux bin: the fraction of stars whose error is within +-1 sigma and +-2 sigma
(nominal 68.27 % and 95.45 %), the Spearman rank correlation of sigma with |error|, and the mean
sigma beside the measured rms. Errors (up to a translation per exposure and chip) are against
the exact truth (simulations, ``truth="exact"``)
or the catalog truth (``truth="catalog"``, real data: then they include the catalog's own error).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes.classical.psffit import flux_dn
from starcenter.cubes.classical.stats import error_model
from starcenter.cubes.store import open_group, open_root
from starcenter.model.bridge import read_features
from starcenter.model.uncertainty import NOMINAL, calibrate, calibrated_sigma, coverage

FLUX_BINS = ((1e3, 3e3), (3e3, 1e4), (1e4, 3e4), (3e4, 1e5))
#: The coverage levels of the reliability diagram.
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.6827, 0.8, 0.9, 0.9545, 0.99)
CLASSICAL_FISHER, CLASSICAL_MODEL = "classical-fisher", "classical-error-model"


def errors_and_sigmas(store, method: str, truth: str = "exact", stars: str = "scored",
                      calibration: dict | None = None) -> dict:
    """{chip: (err (exposure, star, 2) px, sigma (exposure, star, 2) px, flux e- (exposure, star))}
    of ``method`` on the raster stars it is scored on (evaluation.metrics.method_positions);
    ``calibration`` {chip: a model.uncertainty.calibrate result on the store's features},
    e.g. :func:`classical_calibration` of another set, scales the sigmas."""
    from starcenter.evaluation.metrics import method_positions

    ras = open_group(store, schema.RASTERS)
    chips = [str(c) for c in ras[schema.CHIP].values]
    base = "classical" if method in (CLASSICAL_FISHER, CLASSICAL_MODEL) else method
    xy = method_positions(store, base, stars)
    if base == "classical":
        sigma = ras["prelim_err"].values.astype(float)
    else:
        sigma = open_group(store, schema.centers_group(method))["sigma"].values.astype(float)
    tgt = ras["target_exact" if truth == "exact" else "target"].values + ras["corner"].values
    gain = float(np.nanmedian(open_group(store, schema.EXPOSURES)["gain"].values))
    root = open_root(store)
    flux = flux_dn(ras["mag"].values) * gain
    out = {}
    for c, chip in enumerate(chips):
        err = xy[:, c] - tgt[:, c]
        # up to a translation per exposure: a centring convention's constant offset (an ePSF
        # whose centre is defined elsewhere, e.g. a comatic library ePSF) is absorbed by every
        # transformation and is no error of a position
        err = err - np.nanmedian(err, axis=1, keepdims=True)
        s = sigma[:, c]
        if method == CLASSICAL_MODEL:
            a, b = repeat_error_model(store, c)
            s = np.sqrt((a * s) ** 2 + b**2)
        if calibration:
            cal = calibration[chip]
            cov = read_features(root, slice(None), c, cal["names"])
            s = calibrated_sigma(s.reshape(-1, 2), cov.reshape(-1, cov.shape[-1]), cal).reshape(s.shape)
        out[chip] = (err, s, flux[:, c])
    return out


def classical_calibration(store, method: str = CLASSICAL_FISHER, degree: int = 2) -> dict:
    """{chip: calibration} of the classical Fisher sigma on a simulation (errors against its
    exact truth, every raster star): model.uncertainty.calibrate on the instrumental magnitude
    and, where the store has the PSF-epoch fit, the exposure's fitted focus; for
    :func:`errors_and_sigmas` on another set. The Fisher sigma is the noise alone; the factor
    carries what it misses (the ePSF's mismatch, a neighbour's wing) to the extent a set of other
    PSF epochs shares it."""
    root = open_root(store)
    names = ["mag", "focus"] if schema.PSF_FIT in root and "focus" in root[schema.PSF_FIT] else ["mag"]
    out = {}
    for c, (chip, (err, s, flux)) in enumerate(errors_and_sigmas(store, method, "exact", "all").items()):
        cov = read_features(root, slice(None), c, names)
        ok = np.all(np.isfinite(err) & np.isfinite(s), axis=-1) & (flux > 0) & np.all(np.isfinite(cov), axis=-1)
        out[chip] = calibrate(err[ok], s[ok], cov[ok], names, degree)
    return out


def repeat_error_model(store, c: int) -> tuple[float, float]:
    """(a, b px) of classical.stats.error_model fitted to the classical centres' departures from
    the catalog truth (the repeats of every star, no exact truth) on chip index ``c``."""
    ras = open_group(store, schema.RASTERS)
    d = (ras["prelim"].values[:, c] - ras["corner"].values[:, c]) - ras["target"].values[:, c]
    s = ras["prelim_err"].values[:, c].astype(float)
    ok = ras["mask"].values[:, c][..., None] & np.isfinite(d) & np.isfinite(s)
    return error_model(d[ok], s[ok])


def table(data: dict, bins=FLUX_BINS) -> dict:
    """Per chip, axis and flux bin: n, coverage at 1 and 2 sigma (%), Spearman(sigma, |err|),
    mean sigma and rms error (mpix) and their ratio, and the rms of sigma over the rms error
    (the like-for-like scale check: a right sigma per star gives mean sigma^2 = mean err^2, while
    the mean sigma of a bin whose sigmas differ is below its rms); plus 'all' over the bins."""
    from scipy.stats import spearmanr

    out = {}
    for chip, (err, sigma, flux) in data.items():
        res = {}
        for a, ax in enumerate("xy"):
            rows = {}
            for lo, hi in (*bins, (bins[0][0], bins[-1][1])):
                sel = (flux >= lo) & (flux < hi) & np.isfinite(err[..., a]) & np.isfinite(sigma[..., a])
                e, s = err[..., a][sel], sigma[..., a][sel]
                key = "all" if (lo, hi) == (bins[0][0], bins[-1][1]) else f"{lo:.0e}-{hi:.0e}"
                if e.size < 10:
                    rows[key] = {"n": int(e.size)}
                    continue
                rms, ms, qs = float(np.sqrt(np.mean(e**2))), float(np.mean(s)), float(np.sqrt(np.mean(s**2)))
                rows[key] = {"n": int(e.size), "cov1_pct": round(100 * coverage(e, s, 1), 1),
                             "cov2_pct": round(100 * coverage(e, s, 2), 1),
                             "spearman": round(float(spearmanr(s, np.abs(e))[0]), 3),
                             "mean_sigma_mpix": round(ms * 1e3, 2), "rms_mpix": round(rms * 1e3, 2),
                             "sigma_over_rms": round(ms / rms, 3), "rms_sigma_mpix": round(qs * 1e3, 2),
                             "rms_sigma_over_rms": round(qs / rms, 3)}
            res[ax] = rows
        out[chip] = res
    return out


def reliability(data: dict, levels=LEVELS) -> dict:
    """Observed against nominal coverage of the central intervals +-z(level) sigma (Gaussian),
    all flux bins and both axes pooled, per chip: {chip: [observed fraction per level]}."""
    from scipy.stats import norm

    out = {}
    for chip, (err, sigma, flux) in data.items():
        ok = np.isfinite(err) & np.isfinite(sigma) & (flux[..., None] >= FLUX_BINS[0][0])
        z = np.abs(err[ok]) / sigma[ok]
        out[chip] = [round(float(np.mean(z <= norm.ppf(0.5 + p / 2))), 4) for p in levels]
    return out


def within(tab: dict, tol1: float = 3.0, tol2: float = 2.0) -> bool:
    """Whether every chip, axis and flux bin of a :func:`table` covers 68.27 +- tol1 % at 1 sigma
    and 95.45 +- tol2 % at 2 sigma (the issue's criterion)."""
    rows = [r for c in tab.values() for ax in c.values() for k, r in ax.items() if k != "all" and "cov1_pct" in r]
    return bool(rows) and all(abs(r["cov1_pct"] - 100 * NOMINAL[1]) <= tol1 and
                              abs(r["cov2_pct"] - 100 * NOMINAL[2]) <= tol2 for r in rows)
