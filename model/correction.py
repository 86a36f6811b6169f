"""How much of a network's correction to the classical fit to keep, calibrated on a simulated set.

A network with the classical centre as an input (:data:`starcenter.model.bridge.SKIP`) returns
that centre plus a learnt correction. Where the classical fit models the PSF exactly (the
simulations: each exposure's fitted ePSF is the simulator's own PSF family), that fit is the
maximum-likelihood estimate and the correction carries little beyond it; the network's own noise
then makes it 1-5 % worse than the fit (bench_models, SIMULATION held-out sets). The centre a
model with a ``correction_weight`` returns is therefore

    classical + w(mag) (network - classical)        (px)

with w, per instrumental-magnitude bin, the value on a grid in [0, 1] that gives the least error
(clipped rms) against exact truth on a calibration set the network never saw (0: the classical
fit, 1: the network as trained; a stacking of the two estimators), kept only where its gain over
the classical fit exceeds SIGNIFICANCE times its standard error (a paired bootstrap over the
stars): a gain within the calibration set's noise is none, and w is 0 there.
:func:`calibrate_weight` writes it into the model's metadata; ``predict`` and the sigma
calibration (``uncertainty.recalibrate``, to be run after it) apply it. The calibration set's
classical centres must come from the fit the model will correct in use (e.g. ``detect --psf
fitted --neighbour-passes 2``).
"""

from __future__ import annotations

import json

import numpy as np

from starcenter.cubes.classical.stats import robust_sigma
from starcenter.cubes.errors import BadArgumentError

#: The weights tried (0 .. 1 in steps of 0.05) and the magnitude bins (equal numbers of stars).
GRID = np.linspace(0.0, 1.0, 21)
BINS = 6
#: Fewest stars per magnitude bin.
MIN_PER_BIN = 200
#: A weight is kept where its gain over the classical fit is this many standard errors (paired
#: bootstrap, BOOTSTRAP resamples, seeded) or more. Measured (SIMULATION, the shipped WF3 networks,
#: 2-pass classical input): the least-error weight alone, 0.5 on the faintest calibration bin for
#: a 0.3 % gain there, left held-out 3e3-1e4 e- stars 0.4-1.5 % worse than the classical fit.
SIGNIFICANCE, BOOTSTRAP = 2.0, 100
#: The weight's objective: the rms of the errors clipped at CLIP robust sigmas of the classical
#: fit's (a blend's or a mismatch's large errors do not choose it).
CLIP = 5.0


def _robust(err: np.ndarray) -> float:
    """Robust error (px) of (n, 2) errors: the rms over the axes of each axis's robust sigma."""
    return float(np.sqrt(np.mean(robust_sigma(err, axis=0) ** 2)))


def _clipped_rms(err: np.ndarray, limit: np.ndarray) -> float:
    """rms (px) of (n, 2) errors each clipped at +-``limit`` (2,): smooth in the weight, so paired
    differences between weights have a small standard error (a robust sigma's median does not)."""
    return float(np.sqrt(np.mean(np.clip(err, -limit, limit) ** 2)))


def fit(xy, classical, target, mag, bins: int = BINS) -> dict:
    """The weight per magnitude bin (``mag`` the rasters' instrumental magnitude; ``bins`` of
    equal counts, fewer where there are under MIN_PER_BIN stars per bin) that minimizes the clipped
    rms error of ``classical + w (xy - classical)`` against ``target`` (all (n, 2) px, the same
    frame) where significant (module docstring), with the robust errors (mpix) of the classical fit,
    the network and the mix, and the clipped-rms gain and its standard error (mpix)."""
    xy, classical, target, mag = (np.asarray(a, np.float64) for a in (xy, classical, target, mag))
    if len(mag) < MIN_PER_BIN:
        raise BadArgumentError(f"{len(mag)} stars; a correction weight needs at least {MIN_PER_BIN}")
    bins = min(bins, len(mag) // MIN_PER_BIN)
    edges = np.quantile(mag, np.linspace(0, 1, bins + 1))
    k = np.clip(np.searchsorted(edges, mag, side="right") - 1, 0, bins - 1)
    out = {"mag_edges": [round(float(e), 4) for e in edges], "weight": [], "n": [], "classical_mpix": [],
           "network_mpix": [], "mixed_mpix": [], "gain_mpix": [], "gain_se_mpix": []}
    rng = np.random.default_rng(0)
    for b in range(bins):
        s = k == b
        d, r = (xy - classical)[s], (target - classical)[s]
        limit = CLIP * robust_sigma(r, axis=0)
        rms = [_clipped_rms(w * d - r, limit) for w in GRID]
        i = int(np.argmin(rms))
        boot = [rng.integers(0, len(r), len(r)) for _ in range(BOOTSTRAP)] if i else []
        se = float(np.std([_clipped_rms(-r[j], limit) - _clipped_rms(GRID[i] * d[j] - r[j], limit)
                           for j in boot])) if i else 0.0
        gain = rms[0] - rms[i]
        if gain < SIGNIFICANCE * se:
            i = 0
        errs = {w: _robust(w * d - r) for w in (0.0, 1.0, float(GRID[i]))}
        out["weight"].append(round(float(GRID[i]), 3))
        out["n"].append(int(s.sum()))
        for key, e in (("classical_mpix", errs[0.0]), ("network_mpix", errs[1.0]), ("mixed_mpix", errs[GRID[i]]),
                       ("gain_mpix", gain), ("gain_se_mpix", se)):
            out[key].append(round(1e3 * e, 3))
    return out


def weights_at(mag, cw: dict) -> np.ndarray:
    """(n,) the weight of each star's magnitude (the end bins' beyond the calibrated range)."""
    edges = np.asarray(cw["mag_edges"])
    k = np.clip(np.searchsorted(edges, np.asarray(mag, np.float64), side="right") - 1, 0, len(cw["weight"]) - 1)
    return np.asarray(cw["weight"], np.float64)[k]


def classical_in_output(features, meta: dict) -> np.ndarray:
    """(n, 2) the classical centre in the network's output frame (raster px from its corner):
    the ``classical_x/y`` inputs are px from the raster's central pixel (raster_size // 2)."""
    from starcenter.model.bridge import skip_indices

    idx = skip_indices(meta.get("features") or ())
    if not idx:
        raise BadArgumentError("the model takes no classical centre: a correction weight needs one")
    return np.asarray(features, np.float64)[:, list(idx)] + int(meta["raster_size"]) // 2


def apply(xy, features, mag, meta: dict) -> np.ndarray:
    """(n, 2) the model's centres with its calibrated correction weight (unchanged without one)."""
    cw = meta.get("correction_weight")
    if not cw:
        return xy
    if mag is None:
        raise BadArgumentError("a model with a correction weight needs each star's magnitude")
    c = classical_in_output(features, meta)
    return c + weights_at(mag, cw)[:, None] * (np.asarray(xy, np.float64) - c)


def calibrate_weight(model_path, store, chip: str | None = None) -> dict:
    """Fit the correction weight of a model on every star of ``store`` (a simulation it never
    trained on, exact truth) and write it into the model's metadata (the one it replaces under
    "correction_weight_before"); returns it. Calibrate the sigma again afterwards."""
    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.model.bridge import RasterSource
    from starcenter.model.predict import _checked, forward, load_model
    from starcenter.model.train import _write_atomic, metadata_path

    path = st.store_path(store)
    meta, chip, _ = _checked(path, str(model_path), chip, force=False)
    if "target_exact" not in st.open_group(path, schema.RASTERS):
        raise BadArgumentError(f"{path}: no exact truth (a simulation is needed to calibrate a correction weight)")
    features = tuple(meta.get("features") or ())
    src = RasterSource(path, chip, "all", int(meta.get("split_seed", 0)), "exact", features, False, "all")
    model, parts = load_model(str(model_path)), []
    for i in range(src.n_chunks):
        x, t, mag = src.read_chunk(i, with_mag=True)
        if len(t):
            parts.append((forward(model, x)[:, :2], classical_in_output(x[1], meta), t, mag))
    if not parts:
        raise BadArgumentError(f"{path}: no usable rasters of {chip} with exact truth")
    cw = fit(*(np.concatenate(a) for a in zip(*parts)))
    cw["on"] = f"every star of every exposure of {path} (chip {chip}, exact truth)"
    meta["correction_weight_before"] = meta.get("correction_weight")
    meta["correction_weight"] = cw
    _write_atomic(metadata_path(model_path), json.dumps(meta, indent=1))
    return cw
