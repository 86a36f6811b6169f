"""Per-star uncertainties of a network's centres: the likelihood loss and the calibration.

A network built with ``uncertainty=True`` outputs (x, y, log sigma_x, log sigma_y) in raster px;
with ``flux=True`` also the flux: (x, y, dlogF, log sigma_x, log sigma_y, log sigma_dlogF), dlogF the
natural log of the star's flux over the classical fit's (the means first, then their log sigmas).
It is trained on the Gaussian negative log-likelihood (:func:`gaussian_nll`), so the sigma it
predicts is its own estimate of each star's error; that estimate is then recalibrated on stars and
PSF epochs the weights never saw (:func:`calibrate`: the factor is a smooth function of the star's
magnitude and the model's other inputs, e.g. the exposure's focus, fitted by quantile regression
at the 1 and 2 sigma levels), stored in the model's metadata and applied by ``predict``
(:func:`calibrated_sigma`). ``train`` calibrates on its held-out exposures; ``starcenter
calibrate MODEL STORE`` recalibrates on every star of another simulated set (more stars, more
PSF epochs). The calibration holds for stars and epochs like those it was fitted on; on others it
is a claim to be checked (benchmarks/bench_uncertainty.py).
"""

from __future__ import annotations

import json

import numpy as np

from starcenter.model import quiet_tensorflow
from starcenter.model.bridge import MAG_SCALE

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


#: At most this many stars enter the quantile regression (a seeded draw beyond it).
CALIBRATION_MAX_STARS = 40000
#: The residual step of a calibration: a piecewise linear function of magnitude over this many
#: equal-count intervals, made only with at least RESIDUAL_MIN_PER_BIN stars per interval.
RESIDUAL_BINS, RESIDUAL_MIN_PER_BIN = 8, 500


def covariate_names(features=()) -> list:
    """Names of the calibration's covariates for a model with per-star inputs ``features``."""
    return ["mag", *(f for f in features if f != "mag")]


def covariates(mag, features=None, names=()) -> np.ndarray:
    """(n, p) covariates of the calibration: the instrumental magnitude scaled as the network's
    ``mag`` input (model.bridge.MAG_SCALE), then the model's inputs ``features`` (n, len(names),
    already scaled, model.bridge.FEATURES) other than "mag"."""
    mag = np.asarray(mag, np.float64).reshape(-1)
    cols = [(mag + MAG_SCALE[0]) / MAG_SCALE[1]]
    if features is not None and len(names):
        f = np.asarray(features, np.float64).reshape(mag.size, -1)
        cols += [f[:, j] for j, name in enumerate(names) if name != "mag"]
    return np.stack(cols, axis=1)


def calibrate(err: np.ndarray, sigma: np.ndarray, cov: np.ndarray, names=("mag",), degree: int = 1,
              seed: int = 0, sigma_covariate: bool = False) -> dict:
    """Calibration of sigma on held-out stars: quantile regression of log(|err| / sigma).

    err, sigma : (n, k) errors (output - target) and raw sigmas (px; dlogF: natural log);
    cov : (n, p) covariates (:func:`covariates`: scaled magnitude, the exposure's focus, ...),
    their ``names``. Per output, the 68.27 % quantile of log(|err| / sigma) and the 95.45 %
    quantile of log(|err| / 2 sigma) are each fitted as a polynomial of the covariates
    (``degree`` 1: linear; 2: and their squares, for thousands of stars; scipy.optimize.linprog,
    the dual linear programme of quantile regression, :func:`_quantile_regression`); the
    factor applied is the geometric mean of the two (so +-1 sigma and +-2 sigma both come near
    their nominal coverage when the errors' tails are not exactly Gaussian), the covariates clipped
    to the range seen here. Why not bins: measured on held-out PSF epochs, a network's sigma is
    off by a smooth function of magnitude and focus (WF3: 1.2x at focus -6 um, 0.85x at +6 um);
    4 magnitude bins of ~140 stars each put +-3-4 % of noise on the coverage of every bin.
    ``sigma_covariate``: each output's own log raw sigma is a covariate too (its range stored as
    "sigma_lo", "sigma_hi" per output), so the calibration can also compress or stretch the
    network's sigma scale, not only shift it: measured (SIMULATION, WF3 V2 on 96 held-out
    exposures, calibrated on 128 others) the raw sigma of 1 % of the faintest stars reached 0.3-3
    px for errors <= 0.25 px, making the 1e3-3e3 e- bin's mean sigma 1.3-1.7x its rms error;
    with the covariate 0.93 / 0.91, every bin within 0.91-1.00 and coverage unchanged elsewhere.
    Then, with >= 4,000 stars, a residual factor, piecewise linear in magnitude (:func:`_residual`).
    Returns {"names", "degree", "coef" (k, degree p + 1), "coef_68", "coef_95", "lo", "hi", "n",
    "method"[, "residual"]}.
    """
    err, sigma, cov = (np.asarray(a, np.float64) for a in (err, sigma, cov))
    ok = np.all(np.isfinite(err) & np.isfinite(sigma) & (sigma > 0) & (err != 0), axis=1)
    ok &= np.all(np.isfinite(cov), axis=1)
    err, sigma, cov = err[ok], sigma[ok], cov[ok]
    if len(err) > CALIBRATION_MAX_STARS:
        take = np.sort(np.random.default_rng(seed).choice(len(err), CALIBRATION_MAX_STARS, replace=False))
        err, sigma, cov = err[take], sigma[take], cov[take]
    k, p = err.shape[1], cov.shape[1]
    lo, hi = (cov.min(axis=0), cov.max(axis=0)) if len(cov) else (np.zeros(p), np.zeros(p))
    log_s = np.log(sigma)
    s_lo, s_hi = (log_s.min(axis=0), log_s.max(axis=0)) if sigma_covariate and len(log_s) else (np.zeros(k),) * 2
    q = p + bool(sigma_covariate)
    c68, c95 = np.zeros((k, degree * q + 1)), np.zeros((k, degree * q + 1))
    if len(err) > 2 * (degree * q + 1):
        for a in range(k):
            X = _output_design(cov, lo, hi, degree, log_s[:, a] if sigma_covariate else None, s_lo[a], s_hi[a])
            lz = np.log(np.abs(err[:, a]) / sigma[:, a])
            c68[a] = _quantile_regression(X, lz, NOMINAL[1])
            c95[a] = _quantile_regression(X, lz - np.log(2.0), NOMINAL[2])
    out = {"names": list(names), "degree": degree, "coef": ((c68 + c95) / 2).tolist(),
           "coef_68": c68.tolist(), "coef_95": c95.tolist(), "lo": lo.tolist(), "hi": hi.tolist(), "n": len(err),
           "levels": [NOMINAL[1], NOMINAL[2]],
           "method": "quantile regression of log(|error| / sigma) on the covariates"
                     + (" and the output's log raw sigma" if sigma_covariate else "")
                     + " at 68.27 % (1 sigma) and 95.45 % (2 sigma), geometric mean of the two factors, per output"}
    if sigma_covariate:
        out.update(sigma_lo=s_lo.tolist(), sigma_hi=s_hi.tolist())
    if len(err) >= RESIDUAL_BINS * RESIDUAL_MIN_PER_BIN:
        out["residual"] = _residual(err, calibrated_sigma(sigma, cov, out), cov[:, 0])
        out["method"] += "; then a residual factor piecewise linear in magnitude"
    return out


def _residual(err: np.ndarray, sigma: np.ndarray, mag: np.ndarray, bins: int = RESIDUAL_BINS) -> dict:
    """The calibration's residual step, on the regression's own stars: per output, a piecewise
    linear function of the scaled magnitude ``mag`` (knots at its 0, 1/bins, .., 1 quantiles),
    fitted as the regression (quantile regression of log(|err| / sigma) at 68.27 % and of
    log(|err| / 2 sigma) at 95.45 % on the knots' tent functions, the mean of the two), applied
    by :func:`calibrated_sigma` (held at the end knots beyond them). Why: a degree-2 polynomial
    leaves ~1-3 % of coverage by magnitude. Measured (SIMULATION, WF3 V2 calibrated on 103,277
    stars of 128 exposures): +-1 sigma at 3e3-1e4 e- (x) 70.9 % -> 70.0 % on those stars and
    71.7 % -> 70.8 % on 96 other exposures."""
    knots = np.unique(np.quantile(mag, np.linspace(0.0, 1.0, bins + 1)))
    B = np.stack([np.interp(mag, knots, np.eye(len(knots))[j]) for j in range(len(knots))], axis=1)
    log_f = []
    for a in range(err.shape[1]):
        lz = np.log(np.abs(err[:, a]) / sigma[:, a])
        f68, f95 = _quantile_regression(B, lz, NOMINAL[1]), _quantile_regression(B, lz - np.log(2.0), NOMINAL[2])
        log_f.append(((f68 + f95) / 2).tolist())
    return {"mag": knots.tolist(), "log_factor": log_f}


def _output_design(cov, lo, hi, degree: int, log_sigma=None, s_lo: float = 0.0, s_hi: float = 0.0) -> np.ndarray:
    """One output's design matrix: the shared covariates, and its own log raw sigma if given."""
    if log_sigma is None:
        return _design(cov, lo, hi, degree)
    return _design(np.c_[cov, log_sigma], [*lo, s_lo], [*hi, s_hi], degree)


def describe(calibration: dict) -> str:
    """One line: what a stored calibration is and how many stars made it."""
    n = calibration["n"] if isinstance(calibration["n"], int) else sum(calibration["n"])
    if "coef" in calibration:
        res = ", residual piecewise linear in magnitude" if "residual" in calibration else ""
        return f"sigma calibrated on {n} stars (quantile regression on {', '.join(calibration['names'])}{res})"
    return f"sigma calibrated on {n} stars (factors per magnitude bin {np.round(calibration['scale'], 2).tolist()})"


def _design(cov, lo, hi, degree: int = 1) -> np.ndarray:
    cov = np.clip(np.asarray(cov, np.float64), np.asarray(lo), np.asarray(hi))
    return np.column_stack([np.ones(len(cov)), *(cov**d for d in range(1, degree + 1))])


def _quantile_regression(X: np.ndarray, y: np.ndarray, q: float) -> np.ndarray:
    """Coefficients b minimizing the pinball loss sum rho_q(y - X b): the dual linear programme
    (Koenker: max y'd subject to X'd = 0, q - 1 <= d <= q; b is its constraints' marginals,
    sign flipped), solved by HiGHS. Written as the dual because its p constraints beat the
    primal's n: the same coefficients (to 1e-14) in 0.11 s instead of 4.2 s for 10,000 stars and
    0.6 s instead of ~6 min for 40,000 (9 coefficients, this machine)."""
    from scipy.optimize import linprog

    res = linprog(-np.asarray(y, np.float64), A_eq=np.asarray(X, np.float64).T, b_eq=np.zeros(X.shape[1]),
                  bounds=(q - 1.0, q), method="highs")
    if not res.success:
        raise RuntimeError(f"quantile regression of the calibration failed: {res.message}")
    return -np.asarray(res.eqlin.marginals)


def _bin(mag, edges) -> np.ndarray:
    """Bin index of each magnitude; beyond the outer edges: the outer bins."""
    return np.clip(np.searchsorted(np.asarray(edges)[1:-1], mag, side="right"), 0, len(edges) - 2)


def beyond_calibration(cov: np.ndarray, calibration: dict | None) -> np.ndarray:
    """(n,) bool: a covariate other than the magnitude (the PSF epoch, the place on the chip)
    lies outside the range the calibration was made on, where its factor is held at the edge
    (measured, SIMULATION, 8-exposure sets without the crowding cut: the shipped generalists'
    mean sigma / rms error 0.2-0.8 at -12 / +17 um focus, beyond their -10 .. +15 um, against
    0.5-1.1 at +4.5 um). A magnitude beyond it is not flagged: the raw sigma follows the photon
    noise there."""
    cov = np.asarray(cov, np.float64)
    out = np.zeros(len(cov), bool)
    if not calibration or "lo" not in calibration:
        return out
    cov = cov.reshape(len(cov), -1)
    lo, hi = np.asarray(calibration["lo"]), np.asarray(calibration["hi"])
    for j, name in enumerate(calibration.get("names", ())):
        if name != "mag":
            out |= (cov[:, j] < lo[j]) | (cov[:, j] > hi[j])
    return out


def calibrated_sigma(sigma_raw: np.ndarray, cov: np.ndarray, calibration: dict | None) -> np.ndarray:
    """sigma (n, k): the raw sigma times the calibration's factor at each star's covariates
    (:func:`covariates`; no calibration: raw). A calibration of the earlier form (factors per
    magnitude bin, "mag_edges", in models trained before) reads the unscaled magnitude from the
    first column."""
    sigma_raw = np.asarray(sigma_raw, np.float64)
    if not calibration:
        return sigma_raw
    cov = np.asarray(cov, np.float64).reshape(len(sigma_raw), -1)
    if "mag_edges" in calibration:
        mag = cov[:, 0] * MAG_SCALE[1] - MAG_SCALE[0]
        return sigma_raw * np.asarray(calibration["scale"])[_bin(mag, calibration["mag_edges"])]
    coef, degree = np.asarray(calibration["coef"]), calibration.get("degree", 1)
    lo, hi = calibration["lo"], calibration["hi"]
    if "sigma_lo" not in calibration:
        out = sigma_raw * np.exp(_design(cov, lo, hi, degree) @ coef.T)
    else:
        out = np.empty_like(sigma_raw)
        for a in range(sigma_raw.shape[1]):
            with np.errstate(divide="ignore", invalid="ignore"):  # sigma 0 / inf / NaN: clipped into the range
                log_s = np.nan_to_num(np.log(sigma_raw[:, a]), nan=calibration["sigma_hi"][a])
            X = _output_design(cov, lo, hi, degree, log_s, calibration["sigma_lo"][a], calibration["sigma_hi"][a])
            out[:, a] = sigma_raw[:, a] * np.exp(X @ coef[a])
    if "residual" in calibration:  # held at the end knots' values beyond them
        res = calibration["residual"]
        out *= np.exp(np.stack([np.interp(cov[:, 0], res["mag"], f) for f in res["log_factor"]], axis=1))
    return out


def coverage(err: np.ndarray, sigma: np.ndarray, k: float = 1.0) -> float:
    """Fraction of finite (err, sigma) pairs with |err| <= k sigma (NaN if none)."""
    err, sigma = np.asarray(err, float), np.asarray(sigma, float)
    ok = np.isfinite(err) & np.isfinite(sigma)
    return float(np.mean(np.abs(err[ok]) <= k * sigma[ok])) if ok.any() else float("nan")


def errors_on(model, source, meta: dict | None = None) -> tuple:
    """(err (n, k), raw sigma (n, k), covariates (n, p)) of a Keras ``model`` with sigma outputs
    on the stars of a bridge.RasterSource (read chunk by chunk), against its targets; with the
    model's metadata ``meta``, its centres with their correction weight (model.correction)."""
    from starcenter.model.correction import apply
    from starcenter.model.predict import forward

    errs, sigmas, covs = [], [], []
    for i in range(source.n_chunks):
        x, t, mag = source.read_chunk(i, with_mag=True)
        if len(t) == 0:
            continue
        mu, sigma = split_outputs(forward(model, x))
        if meta and meta.get("correction_weight"):
            mu[:, :2] = apply(mu[:, :2], x[1], mag, meta)
        errs.append(mu - t)
        sigmas.append(sigma)
        covs.append(covariates(mag, x[1] if isinstance(x, tuple) else None, source.features))
    k = 3 if source.flux else 2
    if not errs:
        return np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, len(covariate_names(source.features))))
    return np.concatenate(errs), np.concatenate(sigmas), np.concatenate(covs)


#: Fewest stars ``starcenter calibrate`` calibrates on.
RECALIBRATE_MIN = 100


def recalibrate(model_path, store, chip: str | None = None, stars: str = "all", degree: int = 2,
                sigma_covariate: bool = True) -> dict:
    """Calibrate a model's sigma again on ``store``, a simulated set it never trained on (exact
    truth): its ``stars`` ('all', or a split such as 'test') of every exposure, ``degree`` of
    :func:`calibrate` (2 by default: a whole set gives thousands of stars). More stars and PSF
    epochs than the few exposures ``train`` holds out. Rewrites the model's metadata (the
    calibration, with where it was made; the one it replaces under "calibration_before");
    returns the new calibration. ``sigma_covariate``: each output's log raw sigma is a covariate
    too (:func:`calibrate`)."""
    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.bridge import RasterSource
    from starcenter.model.predict import _checked, load_model
    from starcenter.model.train import _write_atomic, load_metadata, metadata_path

    meta = load_metadata(model_path)
    if meta.get("outputs") not in ("xy+sigma", "xy+flux+sigma"):
        raise BadArgumentError(f"{model_path}: the model predicts no sigma (outputs {meta.get('outputs')!r})")
    path = st.store_path(store)
    meta, chip, _ = _checked(path, str(model_path), chip, force=False)  # chip, raster size, filter, loads
    if "target_exact" not in st.open_group(path, schema.RASTERS):
        raise BadArgumentError(f"{path}: no exact truth (a simulation is needed to calibrate sigma)")
    features = tuple(meta.get("features") or ())
    src = RasterSource(path, chip, stars, int(meta.get("split_seed", 0)), "exact", features,
                       meta.get("outputs") == "xy+flux+sigma", "all")
    err, sigma, cov = errors_on(load_model(str(model_path)), src, meta)
    if len(err) < RECALIBRATE_MIN:
        raise BadArgumentError(f"{path}: {len(err)} usable rasters of {chip} with exact truth ({stars} stars); "
                               f"a calibration needs at least {RECALIBRATE_MIN}")
    cal = calibrate(err, sigma, cov, names=covariate_names(features), degree=degree, sigma_covariate=sigma_covariate)
    cal["on"] = f"{stars} stars of every exposure of {path} (chip {chip}, exact truth)"
    meta["calibration_before"] = meta.get("calibration")
    meta["calibration"] = cal
    _write_atomic(metadata_path(model_path), json.dumps(meta, indent=1))  # never half-written
    return cal
