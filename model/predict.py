"""Predict centres for every raster of a chip and write ``centers/NAME`` (chip pixels).

centers/NAME(exposure, chip, star, axis) = raster corner + predicted raster position, in the
schema pixel convention; NaN where there is no raster. Work is one dask task per rasters chunk
(many exposures of one chip), the model loaded once per worker (cached) and run in large batches.
Models load with Keras' safe mode: a model file never runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes.classical.psffit import flux_dn
from starcenter.cubes import store as st
from starcenter.cubes.errors import BadArgumentError, BadInputError
from starcenter.cubes.params import RasterParams
from starcenter.model import quiet_tensorflow
from starcenter.model.train import load_metadata

EXPOSURE_BLOCK = schema.EXPOSURE_BLOCK
BATCH = 8192


def load_model(path: str):
    """The Keras model at ``path``, loaded once per process and file version (a model rewritten
    at the same path, e.g. trained again, is loaded again), in safe mode."""
    st_ = os.stat(path)
    return _load_model(str(path), (st_.st_ino, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_size))


@lru_cache(maxsize=4)
def _load_model(path: str, version: tuple):
    quiet_tensorflow()
    import keras

    return keras.models.load_model(path, compile=False, safe_mode=True)


def forward(model, inputs, batch_size: int = BATCH) -> np.ndarray:
    """``model``'s outputs (n, k) float32 on ``inputs`` (an array, or a tuple of arrays for a
    network with per-star features), ``batch_size`` stars at a time, through one traced
    tf.function per model (the TensorFlow backend; ``model.predict`` on another).

    Not ``model.predict``: on the 2-core machine it ran a 3-member ensemble at either ~6,000 or
    exactly ~3,195 stars/s, chosen per call at random (its input pipeline's threads left the two
    cores half idle, taking turns); this loop ran at 5,900-6,200 in 15 of 15 calls
    (benchmarks/bench_inference.py --shipped; 2026-11-27)."""
    quiet_tensorflow()
    import keras

    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = len(xs[0])
    if keras.backend.backend() != "tensorflow":
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))
    import tensorflow as tf

    fn = getattr(model, "_starcenter_forward", None)
    if fn is None:  # one trace per model: any number of stars, float32 as Keras feeds it
        specs = [tf.TensorSpec((None, *tuple(i.shape[1:])), tf.float32) for i in model.inputs]
        fn = tf.function(lambda *a: model(list(a) if len(a) > 1 else a[0], training=False),
                         input_signature=specs)
        model._starcenter_forward = fn
    parts = [fn(*(np.asarray(x[i:i + batch_size], np.float32) for x in xs)).numpy()
             for i in range(0, n, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.outputs[0].shape[-1]), np.float32)


def check_compatible(meta: dict, chip: str, size: int, filt: str | None, force: bool, path):
    problems = []
    if meta.get("chip") != chip:
        problems.append(f"model trained on {meta.get('chip')} but asked to centre {chip}")
    if int(meta.get("raster_size", -1)) != size:
        problems.append(f"model expects {meta.get('raster_size')}x{meta.get('raster_size')} rasters, "
                        f"the store has {size}x{size}")
    if filt and meta.get("filter") and meta["filter"] != filt:
        problems.append(f"model trained in {meta['filter']}, the store is {filt}")
    if problems and not force:
        raise BadArgumentError(f"{path}: " + "; ".join(problems) + " (use --force to override)")
    return problems


def _trained_on(meta: dict) -> list[tuple[dict, int]]:
    """(dataset record, split seed) of every set a model's weights learnt from: its own, each
    of ``datasets`` (a network trained on several sets), each ensemble member's."""
    seed = int(meta.get("split_seed", meta.get("split", {}).get("seed", 0)))
    out = [(meta.get("dataset") or {}, seed)]
    out += [(d, int(d.get("split_seed", seed))) for d in meta.get("datasets") or ()]
    for m in meta.get("ensemble", {}).get("members", ()):
        m_seed = int(m.get("split_seed") or 0)
        out += [(m.get("dataset") or {}, m_seed)]
        out += [(d, int(d.get("split_seed", m_seed))) for d in m.get("datasets") or ()]
    return out


def split_record(meta: dict, store, chip: str) -> dict:
    """What centers/NAME's evaluation must know of the model's training for ``chip``:
    ``trained_here`` (the model, or one of an ensemble's members, was trained on this store's
    data: its training and validation stars must not be scored), ``seed`` and ``fractions`` of
    that training's split by star, and ``same_stars`` (the store's star axis is the one the
    split was drawn on)."""
    from starcenter.model.bridge import SPLITS, training_identity

    ident = training_identity(store, chip)
    here, same, seed = False, False, int(meta.get("split_seed", meta.get("split", {}).get("seed", 0)))
    for dataset, d_seed in _trained_on(meta):
        seen = dataset.get("identity")
        if seen is None:  # a model made before identities were recorded: compare the store paths
            d_here = d_same = str(dataset.get("store")) == str(store)
        else:
            d_here, d_same = seen["data"] == ident["data"], seen["stars"] == ident["stars"]
        if d_here:
            here, same, seed = True, d_same, d_seed
            break
    split = meta.get("split", {})
    return {"trained_here": bool(here), "same_stars": bool(same) and meta.get("chip") == chip,
            "seed": seed, "fractions": split.get("fractions", {k: list(v) for k, v in SPLITS.items()})}


#: The generalist models shipped with the package (``starcenter generalist --install``), one per
#: chip and filter, ``generalist-<chip>-<filter>.keras`` with its metadata (trained on
#: SIMULATIONS; the training provenance is in each metadata file's "generalist" entry).
SHIPPED = Path(__file__).parent / "generalists"


def store_filter(store) -> str | None:
    """The filter of a store's exposures (None if it does not say)."""
    return st.open_group(store, schema.EXPOSURES).attrs.get("filter")


def shipped_model(chip: str, filt: str | None) -> Path:
    """The shipped generalist model for ``chip`` in ``filt``; a clear error if there is none."""
    path = SHIPPED / f"generalist-{chip}-{filt}.keras"
    if not path.is_file():
        have = sorted(p.name for p in SHIPPED.glob("generalist-*.keras")) if SHIPPED.is_dir() else []
        raise BadArgumentError(f"no shipped generalist model for {chip} in {filt} (shipped: {have or 'none'}); "
                               "pass --model a model of your own (`starcenter train`)")
    return path


#: Bit flags of a network centre (centers/NAME flags).
FLAGS = {"bad_raster": 1,  # non-finite pixels, or not normalized (all zeros): no centre
         "saturated": 2,   # the star's detection is saturated in this exposure: no centre
         "no_feature": 4,  # a per-star input the model needs is missing: no centre
         "bad_pixels": 8,  # a pixel flagged in the data quality (constants.DQ_BAD): no centre
         "sigma_extrapolated": 16}  # an input beyond the sigma calibration's range: a centre, a less sure sigma


def centre(model_path: str, rasters, features=None, mag=None, saturated=None, gain: float | None = None,
           meta: dict | None = None, dq=None) -> dict:
    """Centres of rasters with a model written by ``starcenter train``, on arrays.

    rasters : (n, size, size) normalized to sum 1; features : (n, k) the model's per-star inputs
    (bridge.FEATURES, scaled) if it takes any; mag : (n,) instrumental magnitudes (with the
    features, the covariates of the sigma calibration; needed with uncertainty outputs);
    saturated : (n,) bool; gain : e-/DN (needed with a flux output: its flux is relative to the
    classical flux 10^(-0.4 mag) gain).
    Returns {"xy" (n, 2) raster px, "sigma" (n, 2) px (calibrated; NaN if the model predicts
    none), "flux", "flux_err" (n,) e- (NaN if it predicts none), "flags" (n,) uint8}. A raster
    with non-finite pixels, not summing to 1 (e.g. all zeros), saturated, or without its
    features, or with a flagged pixel (``dq`` (n,) the OR of its pixels' data-quality bits, a
    constants.DQ_BAD bit) gets NaN, sigma = inf and a flag, never a number; a star whose PSF
    epoch or place lies beyond the sigma calibration's range keeps its centre and sigma with the
    flag ``sigma_extrapolated``. ``meta``: the model's
    metadata, if already read.
    """
    from starcenter.model.correction import apply as apply_weight
    from starcenter.model.uncertainty import beyond_calibration, calibrated_sigma, covariates, split_outputs

    meta = meta or load_metadata(model_path)
    r = np.asarray(rasters, np.float32)
    n = r.shape[0]
    flags = np.zeros(n, np.uint8)
    finite = np.all(np.isfinite(r), axis=(1, 2))
    total = np.where(finite, np.nansum(np.where(np.isfinite(r), r, 0), axis=(1, 2)), np.nan)
    flags[~finite | ~(np.abs(total - 1) < 1e-3)] |= FLAGS["bad_raster"]
    if saturated is not None:
        flags[np.asarray(saturated, bool)] |= FLAGS["saturated"]
    if dq is not None:
        flags[C.is_bad(dq)] |= FLAGS["bad_pixels"]
    inputs, f = r[..., None], None
    if meta.get("features"):
        f = np.asarray(features, np.float32).reshape(n, -1)
        flags[~np.all(np.isfinite(f), axis=1)] |= FLAGS["no_feature"]
        inputs = (inputs, np.nan_to_num(f))
    with_sigma = meta.get("outputs") in ("xy+sigma", "xy+flux+sigma")
    k = 3 if meta.get("outputs") == "xy+flux+sigma" else 2
    mu, sigma = np.full((n, k), np.nan), np.full((n, k), np.nan)
    good = flags == 0
    if good.any():
        take = (inputs[0][good], inputs[1][good]) if isinstance(inputs, tuple) else inputs[good]
        pred = forward(load_model(model_path), take)
        if with_sigma:
            mu[good], raw = split_outputs(pred)
            cov = covariates(np.asarray(mag, float)[good], None if f is None else f[good], meta.get("features") or ())
            sigma[good] = calibrated_sigma(raw, cov, meta.get("calibration"))
            beyond = np.flatnonzero(good)[beyond_calibration(cov, meta.get("calibration"))]
            flags[beyond] |= FLAGS["sigma_extrapolated"]
        else:
            mu[good] = pred
        if meta.get("correction_weight"):  # model.correction: part of the correction kept
            mu[good, :2] = apply_weight(mu[good, :2], f[good], np.asarray(mag, float)[good], meta)
    if with_sigma:
        sigma[~good] = np.inf
    out = {"xy": mu[:, :2], "sigma": sigma[:, :2], "flags": flags,
           "flux": np.full(n, np.nan), "flux_err": np.full(n, np.nan)}
    if k == 3:
        out["flux"] = flux_dn(mag) * float(gain) * np.exp(mu[:, 2])
        out["flux_err"] = np.where(good, out["flux"] * sigma[:, 2], np.inf)
    return out


def _predict_block(path: str, model_path: str, name: str, c: int, e0: int, e1: int):
    import zarr

    from starcenter.model.bridge import read_features

    root = zarr.open_group(path, mode="r+")
    g = root[schema.RASTERS]
    meta = load_metadata(model_path)
    mask = np.asarray(g["mask"][e0:e1, c])
    out = np.full(mask.shape + (2,), np.nan)
    sig = np.full(mask.shape + (2,), np.nan, np.float32)
    flags = np.zeros(mask.shape, np.uint8)
    flux, flux_err = (np.full(mask.shape, np.nan, np.float32) for _ in range(2))
    if mask.any():
        feats = read_features(root, slice(e0, e1), c, meta.get("features", ()))[mask]
        res = centre(model_path, np.asarray(g["raster"][e0:e1, c])[mask], feats,
                     np.asarray(g["mag"][e0:e1, c])[mask], _saturated(root, c, e0, e1)[mask],
                     float(np.asarray(root[schema.EXPOSURES]["gain"][c])), meta,
                     np.asarray(g["dq"][e0:e1, c])[mask] if "dq" in g else None)
        out[mask] = np.asarray(g["corner"][e0:e1, c])[mask] + res["xy"]
        sig[mask], flags[mask] = res["sigma"], res["flags"]
        flux[mask], flux_err[mask] = res["flux"], res["flux_err"]
    grp = root[schema.centers_group(name)]
    grp["xy"][e0:e1, c] = out
    # absent from centres written before uncertainties (resumed)
    for var, value in (("sigma", sig), ("flags", flags), ("flux", flux), ("flux_err", flux_err)):
        if var in grp:
            grp[var][e0:e1, c] = value
    grp["done"][e0 // EXPOSURE_BLOCK, c] = 1


def _saturated(root, c: int, e0: int, e1: int) -> np.ndarray:
    """(exposure, star) whether each raster star's detection is saturated in the exposure."""
    det_index = np.asarray(root[f"{schema.CATALOG}/det_index"][e0:e1, c])
    sat = np.zeros(det_index.shape, bool)
    for i, e in enumerate(range(e0, e1)):
        has = det_index[i] >= 0
        if has.any():
            sat[i, has] = np.asarray(root[f"{schema.DETECTIONS}/saturated"][e, c])[det_index[i, has]]
    return sat


def _checked(path: str, model_path: str, chip: str | None, force: bool):
    """(metadata, chip, chip index) once the model and the store are known to fit each other:
    the store has rasters of the chip, the model file loads and its input is the raster size its
    metadata and the store say (a model file edited to lie is refused), filter and chip match."""
    meta = load_metadata(model_path)
    driver.require(path, schema.RASTERS)
    ras = st.open_group(path, schema.RASTERS)
    chips = [str(c) for c in ras[schema.CHIP].values]
    chip = chip or meta.get("chip")
    if chip not in chips:
        raise BadArgumentError(f"chip {chip!r} not in the store's rasters ({chips})")
    size = schema.read_params(ras, RasterParams).size
    check_compatible(meta, chip, size, ras.attrs.get("filter") or
                     st.open_group(path, schema.EXPOSURES).attrs.get("filter"), force, model_path)
    try:
        shape = tuple(load_model(model_path).inputs[0].shape[1:3])  # the raster input
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise BadInputError(model_path, f"not a loadable Keras model ({type(err).__name__}: "
                                        f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    if shape != (meta.get("raster_size"),) * 2 or shape != (size, size):
        raise BadInputError(model_path, f"the network reads {shape[0]}x{shape[1]} rasters but its metadata "
                                        f"says {meta.get('raster_size')} and the store has {size}x{size}")
    from starcenter.model.bridge import check_inputs

    check_inputs(path, model_path, meta, chip, chips.index(chip), force)
    return meta, chip, chips.index(chip)


def _template(group: str, sizes: dict, coords: dict, name: str):
    ds, enc = schema.template(group, ("xy", "sigma", "flags", "flux", "flux_err", "done"), sizes, coords, {
        "method": name, "pixel_convention": schema.PIXEL_CONVENTION})
    ds["flags"].attrs.update(flag_masks=list(FLAGS.values()), flag_meanings=" ".join(FLAGS))
    return ds, enc


def _resolve(store, model_path, chip) -> str:
    """The model path, or the shipped generalist for ``chip`` and the store's filter."""
    if model_path is not None:
        return str(model_path)
    if chip is None:
        raise BadArgumentError("a shipped model is chosen by chip: name the chip (or pass a model)")
    return str(shipped_model(chip, store_filter(store)))


@driver.preflight(lambda store, model_path=None, name="vgg6", chip=None, force=False, **_:
                  _checked(st.store_path(store), _resolve(store, model_path, chip), chip, force) and None)
@driver.holds_lock("predict")
def predict(store, model_path=None, name: str = "vgg6", chip: str | None = None, force: bool = False,
            progress: bool = True):
    """The predict stage: centres of every raster of a chip with a trained model -> ``centers/NAME``.

    Parameters
    ----------
    store : str or path
        A store with rasters.
    model_path : str or path, optional
        A model written by :func:`starcenter.model.train.train` (metadata beside it); None: the
        shipped generalist for ``chip`` (required then) and the store's filter (:data:`SHIPPED`).
    name : str
        The centers group's name (the method's name in reports).
    chip : str, optional
        The chip to centre; default the model's.
    force : bool
        Ignore a chip, raster-size or filter mismatch between the model and the store.
    progress : bool
        Progress lines.

    Returns
    -------
    xarray.Dataset
        ``centers/NAME``: xy (exposure, chip, star, axis) in chip px, NaN where no raster; sigma
        (px, calibrated; NaN for a model without uncertainty outputs, inf where flagged); flags;
        the attributes say which model wrote each chip and whether it trained on this store's stars.
    """
    import dask

    path = st.store_path(store)
    model_path = _resolve(path, model_path, chip)
    meta, chip, c = _checked(path, model_path, chip, force)
    ras = st.open_group(path, schema.RASTERS)
    ne, nc, ns = ras.sizes[schema.EXPOSURE], ras.sizes[schema.CHIP], ras.sizes[schema.STAR]
    group = schema.centers_group(name)
    sizes = {schema.EXPOSURE: ne, schema.CHIP: nc, schema.STAR: ns, schema.AXIS: 2,
             schema.BLOCK: -(-ne // EXPOSURE_BLOCK)}
    coords = {schema.EXPOSURE: ras[schema.EXPOSURE].values, schema.CHIP: ras[schema.CHIP].values,
              schema.AXIS: np.array(["x", "y"], dtype=object)}
    # centres of rasters cut since (another catalog: other stars) are stale and replaced
    driver.prepare(path, group, lambda: _template(group, sizes, coords, name),
                   {"rasters_made_from": ras.attrs.get("catalog_source", "") + ras.attrs.get("params", "")})
    key = f"model_{chip}"
    digest = hashlib.sha256(Path(model_path).read_bytes())
    digest.update(json.dumps(meta.get("calibration"), sort_keys=True).encode())
    ident = f"{model_path} sha256:{digest.hexdigest()[:16]}"
    if st.open_group(path, group).attrs.get(key) not in (None, ident):
        # another model, or the same one calibrated again (starcenter calibrate), wrote this
        # chip before: redo it
        st.open_root(path, "r+")[f"{group}/done"][:, c] = 0
    st.set_attr(path, group, **{key: ident, f"split_{chip}": split_record(meta, path, chip)})
    done = st.done_mask(path, group)
    ready = np.zeros(done.shape, bool)
    ready[:, c] = True
    driver.run_chunks(path, group, done, lambda b, k: dask.delayed(_predict_block)(
        path, model_path, name, k, b * EXPOSURE_BLOCK, min(ne, (b + 1) * EXPOSURE_BLOCK)),
        f"predict {name} {chip} {path}", progress, ready)
    return st.open_group(path, group)
