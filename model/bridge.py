"""The tf.data bridge: stream a rasters cube (Zarr) into Keras, chunk by chunk.

Each element of the outer dataset is one Zarr chunk of the rasters group (EXPOSURE_BLOCK
exposures of one chip, all stars); chunks are read with zarr in a generator, interleaved,
masked (invalid rasters and stars of other subsets dropped), unbatched, shuffled in a bounded
buffer, batched and prefetched. Memory is bounded by ``cycle_length`` chunks plus the shuffle
buffer, whatever the cube's size.

The train/validation/test split (70/10/20) is by star, from a hash of the star key and a seed,
so no star appears in two subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.psffit import flux_dn
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.params import DetectParams, RasterParams
from starcenter.model import quiet_tensorflow

SPLITS = {"train": (0.0, 0.7), "validation": (0.7, 0.8), "test": (0.8, 1.0)}
#: Per-star scalar inputs a network may take beside its raster, each scaled to order 1, as
#: functions of a :class:`_Chunk` (the chunk's arrays, each read once) -> (exposure, star):
#: ``mag``: the classical fit's instrumental magnitude (-2.5 log10 DN), (mag + 8) / 2, so the
#: 1e3-1e5 e- stars (F555W gain 7) span about -1.2 .. +1.3 -- a raster normalized to sum 1 no
#: longer says how bright its star is, and its noise (hence sigma) depends on it;
#: ``focus``: the exposure's fitted PSF epoch (psf_fit focus, um) / 10 (NaN where not fitted);
#: ``chip_x``, ``chip_y``: the star's place on the chip, (position - 399.5) / 399.5;
#: ``classical_x``, ``classical_y``: the classical fit's centre (the detection the raster was cut
#: around) in the raster, px from its central pixel (raster_size // 2), -0.5 .. 0.5 -- with
#: :data:`SKIP` a network adds them to its x, y (it learns a correction to the classical fit).
#: (offset, divisor) of the ``mag`` input: (mag + 8) / 2.
MAG_SCALE = (8.0, 2.0)
#: Features a network adds to its x, y outputs through a fixed identity (architectures.build skip).
SKIP = ("classical_x", "classical_y")
FEATURES = {
    "mag": lambda k: (k(schema.RASTERS, "mag") + MAG_SCALE[0]) / MAG_SCALE[1],
    "focus": lambda k: k.per_exposure(k(schema.PSF_FIT, "focus") / 10.0),
    "chip_x": lambda k: (k(schema.RASTERS, "prelim")[..., 0] - 399.5) / 399.5,
    "chip_y": lambda k: (k(schema.RASTERS, "prelim")[..., 1] - 399.5) / 399.5,
    "classical_x": lambda k: k.classical()[..., 0],
    "classical_y": lambda k: k.classical()[..., 1],
}


def skip_indices(features) -> tuple[int, ...]:
    """Indices in ``features`` of the :data:`SKIP` pair, () when the network takes neither; a
    network with one of them alone is refused (its x, y would mix a raster and a fit axis)."""
    have = [f in features for f in SKIP]
    if any(have) and not all(have):
        raise BadArgumentError(f"the features {SKIP} go together, got {tuple(features)}")
    return tuple(list(features).index(f) for f in SKIP) if all(have) else ()


class _Chunk:
    """The arrays of exposures ``sl`` of chip ``c`` that the features read, each read once
    (several features share ``rasters/prelim``)."""

    def __init__(self, root, sl: slice, c: int):
        self.root, self.sl, self.c, self._read = root, sl, c, {}

    def __call__(self, group: str, name: str) -> np.ndarray:
        if (group, name) not in self._read:
            if group not in self.root or name not in self.root[group]:
                raise StoreMismatchError(str(self.root.store), f"has no {group}/{name} for the network's inputs"
                                         + (": run `starcenter psf --fit focus` first"
                                            if group == schema.PSF_FIT else ""))
            self._read[group, name] = np.asarray(self.root[group][name][self.sl, self.c], np.float64)
        return self._read[group, name]

    def classical(self) -> np.ndarray:
        """(exposure, star, 2) the classical centre in the raster, px from its central pixel."""
        size = self.root[schema.RASTERS]["raster"].shape[-1]
        return self(schema.RASTERS, "prelim") - self(schema.RASTERS, "corner") - size // 2

    def per_exposure(self, values: np.ndarray) -> np.ndarray:
        """(exposure,) values broadcast over the raster stars: (exposure, star)."""
        n_star = self.root[schema.RASTERS]["mask"].shape[2]
        return np.repeat(values[:, None], n_star, axis=1)


def check_inputs(path: str, model_path: str, meta: dict, chip: str, c: int, force: bool = False) -> None:
    """Refuse (or say, where partial) a store that cannot give a network (metadata ``meta``) its
    features: each input's array exists; a network correcting the classical fit (:data:`SKIP`)
    needs rasters cut from ``detect --psf fitted`` (and is told where its correction weight was
    calibrated on other neighbour passes); one taking ``focus`` needs a fitted PSF epoch."""
    features = tuple(meta.get("features") or ())
    if set(SKIP) <= set(features) and not force:
        _require_fitted_detections(path, model_path, meta)
    read_features(st.open_root(path), slice(0, 1), c, features)
    if "focus" in features:
        _check_focus(path, model_path, chip, c, force)


def _check_focus(path: str, model_path: str, chip: str, c: int, force: bool) -> None:
    """A network taking the exposure's PSF epoch gives no centre (flag no_feature) on exposures
    whose focus fit was flagged (``detect --psf fitted`` fell back to the library ePSF there):
    refused where no exposure of the chip has one (unless ``force``), said where some lack it."""
    import warnings

    from starcenter.cubes.classical.focus import status_reasons

    fit = st.open_group(path, schema.PSF_FIT)
    focus, status = (np.asarray(fit[v].values[:, c]) for v in ("focus", "status"))
    missing = ~np.isfinite(focus)
    if not missing.any():
        return
    why = status_reasons(status[missing])
    if missing.all() and not force:
        raise StoreMismatchError(path, f"has no fitted PSF epoch for {chip} on any exposure (psf_fit: {why}), "
                                       f"and {model_path} takes it as an input: centre {chip} with the classical "
                                       "fit, or fit its PSF epoch again (e.g. with the exposures' data quality "
                                       "files ingested, so cosmic rays are left out)")
    warnings.warn(f"{path}: {int(missing.sum())} of {missing.size} exposures of {chip} have no fitted PSF epoch "
                  f"({why}): their stars get no centre from {model_path} (flag no_feature)", stacklevel=2)


def _require_fitted_detections(path: str, model_path: str, meta: dict) -> None:
    """A network that corrects the classical fit learnt the fit with each exposure's fitted ePSF:
    the rasters' centres (its classical input) must come from ``detect --psf fitted``; with
    other neighbour passes than its correction weight's calibration set, a warning."""
    import warnings

    params = schema.read_params(st.open_group(path, schema.DETECTIONS), DetectParams)
    psf = params.psf
    calibrated = (meta.get("generalist") or {}).get("calibration_set", {}).get("neighbour_passes", 0)
    if meta.get("correction_weight") and psf == "fitted" and params.neighbour_passes != calibrated:
        warnings.warn(f"{path}: detections with {params.neighbour_passes} neighbour passes, but the correction "
                      f"weight and sigma of {model_path} were calibrated on classical centres with {calibrated}: "
                      f"run `starcenter detect --psf fitted --neighbour-passes {calibrated} --overwrite` and "
                      "`starcenter catalog` for the centres its figures are for (crowded stars gain most)",
                      stacklevel=2)
    if psf != "fitted":
        raise StoreMismatchError(path, f"its rasters were cut from `detect --psf {psf}` fits, but {model_path} "
                                       "corrects the fit with each exposure's fitted ePSF: run `starcenter psf`, "
                                       "`starcenter detect --psf fitted --overwrite` and `starcenter catalog` first "
                                       "(or --force)")


#: Fraction of the exposures (PSF epochs) a network with sigma outputs never trains on: its sigma
#: is calibrated on the validation stars of these exposures, so the calibration sees epochs the
#: weights did not (a split by star alone calibrates on the training epochs).
HOLDOUT_EXPOSURES = 0.15
#: Subsets a trained model has seen: its weights (train) and its best-epoch choice (validation).
SEEN = ("train", "validation")
TARGETS = {"catalog": "target", "exact": "target_exact"}


def split_fraction(star_key, seed: int) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per star (splitmix64 of key and seed)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = np.asarray(star_key, np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def star_subset(star_key, subset: str, seed: int) -> np.ndarray:
    """Mask of stars belonging to ``subset`` ('train', 'validation', 'test', 'unseen' = not
    train, or 'all')."""
    if subset == "all":
        return np.ones(np.shape(star_key), bool)
    ranges = {**SPLITS, "unseen": (SPLITS["train"][1], 1.0)}
    if subset not in ranges:
        raise BadArgumentError(f"unknown subset {subset!r}; expected one of {tuple(ranges)} or 'all'")
    lo, hi = ranges[subset]
    f = split_fraction(star_key, seed)
    return (f >= lo) & (f < hi)


def exposure_subset(n_exposures: int, which: str, seed: int) -> np.ndarray:
    """Mask of exposures: 'all', 'holdout' (the HOLDOUT_EXPOSURES fraction, drawn from a hash of
    the exposure index and the seed) or 'fit' (the others)."""
    if which == "all":
        return np.ones(n_exposures, bool)
    if which not in ("fit", "holdout"):
        raise BadArgumentError(f"unknown exposure subset {which!r}; expected 'all', 'fit' or 'holdout'")
    held = split_fraction(np.arange(n_exposures) + 10**12, seed) < HOLDOUT_EXPOSURES
    return held if which == "holdout" else ~held


def training_identity(store, chip: str) -> dict:
    """What a model trained on ``chip`` of ``store`` has seen, as two short hashes.

    ``data``: the store's source (its simulation or ingest provenance, root attributes), so a
    copy of a store, or the same simulation rerun, is the same data. ``stars``: the average
    catalog's star axis for the chip (its stars' instrumental magnitudes in the reference
    exposure, which the second iteration keeps), so the split by ``star_key`` means the same
    stars only where this hash agrees. Written into the model's
    metadata by ``train`` and compared by ``predict`` (honest evaluation: a network is scored
    on the stars it never saw)."""
    import hashlib

    root = st.read_attrs(store)
    prov = root.get("starcenter_simulation") or root.get("starcenter_ingest") or st.store_path(store)
    cat = st.open_group(store, schema.CATALOG)
    ref_mag = np.nan_to_num(np.asarray(cat["ref_mag"].sel(chip=chip).values, np.float64), nan=99.0)
    stars = hashlib.sha256(ref_mag.tobytes()).hexdigest()[:16]
    return {"data": hashlib.sha256(str(prov).encode()).hexdigest()[:16], "stars": stars}


@dataclass
class RasterSource:
    """Where and what to read: a store's rasters for one chip, a subset and a target."""

    store: str
    chip: str
    subset: str = "train"
    seed: int = 0
    target: str = "catalog"
    features: tuple = ()
    flux: bool = False
    exposures: str = "all"

    def __post_init__(self):
        import zarr

        self.store = str(self.store)
        if self.target not in TARGETS:
            raise BadArgumentError(f"unknown target {self.target!r}; expected one of {tuple(TARGETS)}")
        self.features = tuple(self.features)
        if self.flux and self.target != "exact":
            raise BadArgumentError("a flux target needs exact truth (--target exact, simulations): "
                                   "the average catalog has no mean fluxes")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise BadArgumentError(f"unknown features {unknown}; expected some of {tuple(FEATURES)}")
        root = zarr.open_group(self.store, mode="r")
        if schema.RASTERS not in root:
            raise StoreMismatchError(self.store, "has no rasters: run `starcenter catalog` first")
        g = root[schema.RASTERS]
        if TARGETS[self.target] not in g:
            raise StoreMismatchError(self.store, f"rasters have no {TARGETS[self.target]!r} "
                                     "(exact targets exist for simulations only)")
        chips = [str(c) for c in root[f"{schema.RASTERS}/{schema.CHIP}"][...]]
        if self.chip not in chips:
            raise BadArgumentError(f"chip {self.chip!r} not in the rasters ({chips})")
        self.chip_index = chips.index(self.chip)
        self.size = schema.read_params(g.attrs, RasterParams).size
        self.n_exposures = g["raster"].shape[0]
        keys = np.asarray(g["star_key"][self.chip_index])
        sel = np.asarray(g["selected"][self.chip_index])
        self.stars = star_subset(keys, self.subset, self.seed) & sel
        self.exposure_ok = exposure_subset(self.n_exposures, self.exposures, self.seed)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_exposures // schema.EXPOSURE_BLOCK)

    def read_chunk(self, i: int, with_mag: bool = False):
        """(rasters (n, size, size, 1) float32, targets (n, 2) float32) of chunk ``i``; with
        ``features``, ((rasters, features (n, k) float32), targets); ``with_mag``: and the
        samples' instrumental magnitudes (n,) as a third item."""
        import zarr

        root = zarr.open_group(self.store, mode="r")
        g = root[schema.RASTERS]
        e0, e1 = i * schema.EXPOSURE_BLOCK, min(self.n_exposures, (i + 1) * schema.EXPOSURE_BLOCK)
        c = self.chip_index
        ok = usable(g, slice(e0, e1), c) & self.stars[None, :] & self.exposure_ok[e0:e1, None]
        tgt = np.asarray(g[TARGETS[self.target]][e0:e1, c])
        if self.flux:
            tgt = np.concatenate([tgt, flux_target(root, slice(e0, e1), c)[..., None]], axis=-1)
        ok &= np.all(np.isfinite(tgt), axis=-1)
        feats = read_features(root, slice(e0, e1), c, self.features)
        ok &= np.all(np.isfinite(feats), axis=-1)
        r = np.asarray(g["raster"][e0:e1, c])[ok][..., None].astype(np.float32)
        out = ((r, feats[ok].astype(np.float32)) if self.features else r), tgt[ok].astype(np.float32)
        return out + (np.asarray(g["mag"][e0:e1, c])[ok],) if with_mag else out

    def count(self) -> int:
        """Number of samples (reads only masks, targets and features, not the rasters)."""
        import zarr

        root = zarr.open_group(self.store, mode="r")
        g = root[schema.RASTERS]
        c = self.chip_index
        ok = usable(g, slice(None), c) & self.stars[None, :] & self.exposure_ok[:, None]
        ok &= np.all(np.isfinite(np.asarray(g[TARGETS[self.target]][:, c])), axis=-1)
        ok &= np.all(np.isfinite(read_features(root, slice(None), c, self.features)), axis=-1)
        if self.flux:
            ok &= np.isfinite(flux_target(root, slice(None), c))
        return int(ok.sum())

    def to_numpy(self):
        """All samples in memory (small sets, tests, the in-memory benchmark baseline):
        (inputs, targets), inputs as read_chunk gives them."""
        parts = [self.read_chunk(i) for i in range(self.n_chunks)]
        t = np.concatenate([p[1] for p in parts])
        if self.features:
            return (np.concatenate([p[0][0] for p in parts]), np.concatenate([p[0][1] for p in parts])), t
        return np.concatenate([p[0] for p in parts]), t


def usable(g, sl: slice, c: int) -> np.ndarray:
    """(exposure, star) rasters a network may learn from: valid (``mask``) and without a pixel
    flagged in the data quality (``dq`` & constants.DQ_BAD; rasters made before it: all)."""
    ok = np.asarray(g["mask"][sl, c])
    if "dq" in g:
        ok = ok & ~C.is_bad(g["dq"][sl, c])
    return ok


def classical_flux(root, sl: slice, c: int) -> np.ndarray:
    """(exposure, star) e-: the classical fit's flux of each raster star (rasters mag, the chip's
    gain)."""
    gain = float(np.asarray(root[schema.EXPOSURES]["gain"][c]))
    return flux_dn(_Chunk(root, sl, c)(schema.RASTERS, "mag")) * gain


def flux_target(root, sl: slice, c: int) -> np.ndarray:
    """(exposure, star): ln(true flux / classical flux), the flux output's target (simulations:
    truth flux through the rasters' sim_index; NaN where a star has no true counterpart)."""
    idx = np.asarray(root[schema.RASTERS]["sim_index"][c])
    true = np.full(idx.shape, np.nan)
    true[idx >= 0] = np.asarray(root[schema.TRUTH]["flux"][c])[idx[idx >= 0]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(true[None, :] / classical_flux(root, sl, c))


def read_features(root, sl: slice, c: int, names) -> np.ndarray:
    """(exposure, star, k) float64 features ``names`` (:data:`FEATURES`) of chip ``c`` for the
    exposures ``sl`` of the store whose root group is ``root`` (k = 0: an empty last axis)."""
    mask = root[schema.RASTERS]["mask"]
    n_exp = len(range(*sl.indices(mask.shape[0])))
    chunk = _Chunk(root, sl, c)
    cols = [FEATURES[name](chunk) for name in names]
    return np.stack(cols, axis=-1) if cols else np.zeros((n_exp, mask.shape[2], 0))


def dataset(source: RasterSource, batch_size: int = 256, shuffle_buffer: int = 20_000,
            cycle_length: int = 2, shuffle: bool = True, epoch_seed: int = 0, repeat: bool = False):
    """A tf.data.Dataset of (raster, target) batches streamed from the Zarr cube."""
    quiet_tensorflow()
    import tensorflow as tf

    n, size = source.n_chunks, source.size

    def chunk_gen(i):
        r, t = source.read_chunk(int(i))
        yield r, t

    raster = tf.TensorSpec((None, size, size, 1), tf.float32)
    inputs = (raster, tf.TensorSpec((None, len(source.features)), tf.float32)) if source.features else raster
    sig = (inputs, tf.TensorSpec((None, 3 if source.flux else 2), tf.float32))
    order = np.random.default_rng([source.seed, epoch_seed]).permutation(n) if shuffle else np.arange(n)
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    if repeat:
        ds = ds.repeat()
    ds = ds.interleave(lambda i: tf.data.Dataset.from_generator(chunk_gen, output_signature=sig, args=(i,)),
                       cycle_length=cycle_length, num_parallel_calls=cycle_length, deterministic=True)
    ds = ds.unbatch()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=source.seed + epoch_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if not repeat:  # tell Keras the epoch length (streamed data has no known cardinality)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-source.count() // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)
