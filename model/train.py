"""Training VGG6 (or any registered architecture) from a rasters cube through the tf.data bridge.

Recipes: ``paper`` is the published one (MAE loss, Adam at 1e-5, batch 32, 1000 epochs); ``fast``
is starcenter's (Adam from 1e-3 on a cosine schedule over 100 epochs, batch 64, the
best-validation weights restored), which reaches the paper recipe's validation MAE in at most a
tenth of its epochs (benchmarks/recipe_comparison.py). Every epoch is checkpointed atomically
(:class:`EpochCheckpoint`): a killed run resumes from its last finished epoch (the schedule is a
function of the epoch; the best-weights tracker restarts with the resumed run). The loss history and the
metadata (chip, filter, raster size, normalization, architecture, data set and its identity
hashes, epochs, the split by star, package version) are saved beside the model as
``M.keras.json``; ``predict`` checks them and records the split on ``centers/NAME``, so that
evaluation scores the network on its test stars only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import BadArgumentError
from starcenter.model import quiet_tensorflow
from starcenter.model.architectures import build


@dataclass(frozen=True)
class Recipe:
    """A training recipe: Adam on the MAE loss (pixels) at ``learning_rate``, ``batch_size``,
    up to ``max_epochs``. ``schedule``: 'constant', or 'cosine' (the learning rate follows a
    half cosine from ``learning_rate`` to 0 over the run's epochs, a function of the epoch alone,
    so a resumed run continues the same schedule). ``restore_best``: end with the weights of
    the epoch of lowest validation MAE."""

    name: str
    learning_rate: float
    batch_size: int
    max_epochs: int
    schedule: str = "constant"
    restore_best: bool = False


RECIPES = {
    "paper": Recipe("paper", 1e-5, 32, 1000),
    # Chosen on the demo set (SIMULATION, WF3 and PC1, V1 and V2; benchmarks/recipe_comparison.py):
    # plateau-halving with early stopping (patience 10-15) stopped at 31-76 epochs 1-15% above the
    # paper recipe's 1000-epoch best on 3 of 4 chip/arch pairs; a cosine schedule over 100 epochs
    # at batch 64 gave 30.2 / 13.6 mpix (WF3 / PC1 V1) against the paper recipe's 35.4 / 14.3.
    "fast": Recipe("fast", 1e-3, 64, 100, schedule="cosine", restore_best=True),
}


def metadata_path(model_path) -> Path:
    return Path(str(model_path) + ".json")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("starcenter")
    except PackageNotFoundError:
        return "unknown"


def compile_model(model, rc: Recipe, steps_per_execution: int = 1, uncertainty: bool = False) -> None:
    """MAE loss (pixels) and Adam at the recipe's learning rate; a network with uncertainty
    outputs: the Gaussian negative log-likelihood, with the centres' MAE as a metric.
    ``steps_per_execution`` runs several optimizer steps per compiled call (same updates, less
    Python overhead per step)."""
    quiet_tensorflow()
    import keras

    from starcenter.model.uncertainty import centre_mae, gaussian_nll

    loss, metrics = (gaussian_nll, [centre_mae]) if uncertainty else ("mae", None)
    model.compile(optimizer=keras.optimizers.Adam(rc.learning_rate), loss=loss, metrics=metrics,
                  steps_per_execution=steps_per_execution)


def recipe_callbacks(rc: Recipe, n_epochs: int | None = None, monitor: str = "val_loss") -> list:
    """The recipe's schedule over ``n_epochs`` (default its max_epochs) and, if asked, the
    best-validation weights (lowest ``monitor``) restored at the end."""
    import math

    quiet_tensorflow()

    import keras

    n = n_epochs or rc.max_epochs
    callbacks = []
    if rc.schedule == "cosine":
        lr0 = rc.learning_rate
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: lr0 * 0.5 * (1 + math.cos(math.pi * epoch / n))))
    elif rc.schedule != "constant":
        raise BadArgumentError(f"unknown schedule {rc.schedule!r}")
    if rc.restore_best:  # never stops early (patience = the whole run): only restores the best
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=n, mode="min", restore_best_weights=True))
    return callbacks


class EpochCheckpoint:
    """Per-epoch checkpoint in ``DIR``: weights plus optimizer state in a new file
    ``epoch-N.weights.h5``, then ``state.json`` (epoch, weights file name, loss history)
    replaced atomically with ``os.replace`` as the commit point, then the older weights file
    removed. A kill at any instant leaves the last complete checkpoint readable.

    Written because keras' BackupAndRestore overwrites its weights file in place: a kill -9
    during that write left an unreadable HDF5 file and the resumed run failed ("bad object
    header version number", CI run of 2026-11-25). The history CSV beside the model is
    rewritten (atomically) from the checkpoint's history, so the two always agree.
    """

    def __init__(self, directory, history_csv):
        self.dir = Path(directory)
        self.history_csv = Path(history_csv)

    def state(self) -> dict | None:
        p = self.dir / "state.json"
        return json.loads(p.read_text()) if p.exists() else None

    def restore(self, model) -> tuple[int, list[dict]]:
        """Load the last checkpoint into ``model``; returns (epochs done, history rows)."""
        st = self.state()
        if st is None:
            return 0, []
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.dir / st["weights"])
        return int(st["epoch"]), list(st["history"])

    def callback(self, model_history: list[dict]):
        quiet_tensorflow()
        import keras

        ckpt = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                model_history.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
                ckpt.save(self.model, epoch + 1, model_history)

        return _Save()

    def save(self, model, epoch: int, history: list[dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        old = self.state()
        name = f"epoch-{epoch}.weights.h5"
        model.save_weights(self.dir / name, overwrite=True)
        _write_atomic(self.dir / "state.json",
                      json.dumps({"epoch": epoch, "weights": name, "history": history}))
        if old and old["weights"] != name:
            (self.dir / old["weights"]).unlink(missing_ok=True)
        _write_atomic(self.history_csv, _history_csv(history))

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _history_csv(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r if k != "epoch"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["epoch", *keys], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def train(store, chip: str, arch: str = "v2", recipe: str = "fast", epochs: int | None = None,
          out="model.keras", seed: int = 0, target: str = "catalog", verbose: int = 2,
          uncertainty: bool = False, features=(), flux: bool = False) -> dict:
    """Train a centring network on ``chip``'s rasters of ``store``; returns the metadata dict
    (with the loss history) that is also written to ``out + '.json'``. ``uncertainty``: the
    network also predicts sigma_x, sigma_y (Gaussian likelihood loss), trained without 15 % of
    the exposures and calibrated on their validation stars (:mod:`starcenter.model.uncertainty`); ``features``: per-star inputs beside
    the raster (:data:`starcenter.model.bridge.FEATURES`; ("mag",) by default with uncertainty);
    ``flux`` (with uncertainty, exact targets): the network also predicts each star's flux, as
    the log of its ratio to the classical fit's flux, with its sigma."""
    quiet_tensorflow()
    import keras

    if recipe not in RECIPES:
        raise BadArgumentError(f"unknown recipe {recipe!r}; expected one of {tuple(RECIPES)}")
    rc = RECIPES[recipe]
    n_epochs = int(epochs) if epochs else rc.max_epochs
    if n_epochs < 1:
        raise BadArgumentError(f"epochs must be >= 1, got {epochs}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from starcenter.model.bridge import RasterSource, dataset, skip_indices

    features = tuple(features) or (("mag",) if uncertainty else ())
    # with sigma outputs, a few exposures (PSF epochs) are kept out of training for the calibration
    fit = "fit" if uncertainty else "all"
    train_src = RasterSource(store, chip, "train", seed, target, features, flux, fit)
    val_src = RasterSource(store, chip, "validation", seed, target, features, flux, fit)
    keras.utils.set_random_seed(seed)
    model = build(arch, train_src.size, len(features), uncertainty, flux, skip_indices(features))
    compile_model(model, rc, uncertainty=uncertainty)
    history_csv = Path(str(out) + ".history.csv")
    ckpt = EpochCheckpoint(str(out) + ".backup", history_csv)
    done, rows = ckpt.restore(model)  # (0, []) for a fresh run
    if not done:
        history_csv.unlink(missing_ok=True)
    elif verbose:
        print(f"resuming {out} after epoch {done} from {ckpt.dir}", flush=True)
    # a network with sigma outputs keeps the epoch of the best validation centres: its
    # validation likelihood rewards the first epochs' wide sigmas (measured: val NLL lowest at
    # epoch 1 of 40 while the validation MAE fell from 53 to 17 mpix), and the sigma scale is
    # recalibrated on the held-out exposures afterwards anyway
    monitor = "val_centre_mae" if uncertainty else "val_loss"
    callbacks = [ckpt.callback(rows), *recipe_callbacks(rc, n_epochs, monitor)]
    t0 = time.perf_counter()
    train_ds = dataset(train_src, rc.batch_size)
    val_ds = dataset(val_src, 4096, shuffle=False)
    # shuffling happens in the tf.data pipeline (bounded buffer), not in Keras
    if done < n_epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=n_epochs, initial_epoch=done,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    wall = time.perf_counter() - t0
    model.save(out)
    ckpt.remove()  # finished: the next train with this --out starts afresh
    meta = _metadata(store, chip, arch, rc, rows, seed, target, train_src, val_src, wall)
    meta.update(outputs="xy+flux+sigma" if flux else "xy+sigma" if uncertainty else "xy", features=list(features),
                calibration=_calibrate(model, store, chip, seed, target, features, flux) if uncertainty else None)
    if uncertainty:
        from starcenter.model.bridge import exposure_subset

        meta["split"]["holdout_exposures"] = np.flatnonzero(
            exposure_subset(train_src.n_exposures, "holdout", seed)).tolist()
    metadata_path(out).write_text(json.dumps(meta, indent=1))
    return meta


def _metadata(store, chip, arch, rc, rows, seed, target, train_src, val_src, wall) -> dict:
    """A trained model's metadata: what it is, what it was trained on, its loss history."""
    from starcenter.model.bridge import SEEN, SPLITS, training_identity

    keys = sorted({k for r in rows for k in r if k != "epoch"})
    history = {k: [r[k] for r in rows] for k in keys}  # the checkpoint's rows: the CSV's content
    ex = st.open_group(store, schema.EXPOSURES)
    root_attrs = st.read_attrs(store)
    return {
        "chip": chip, "filter": ex.attrs.get("filter"), "raster_size": train_src.size,
        "normalization": "sum to 1", "architecture": arch, "recipe": asdict(rc),
        "dataset": {"store": str(store), "source": ex.attrs.get("source"),
                    "provenance": root_attrs.get("starcenter_simulation") or root_attrs.get("starcenter_ingest"),
                    "identity": training_identity(store, chip)},
        "target": target, "epochs": len(history.get("loss", [])), "split_seed": seed,
        "split": {"seed": seed, "fractions": {k: list(v) for k, v in SPLITS.items()},
                  "seen": list(SEEN), "key": "rasters star_key"},
        "package_version": _package_version(), "train_seconds": round(wall, 1),
        "n_train": train_src.count(), "n_validation": val_src.count(), "history": history,
    }


#: Fewest held-out rasters the calibration of sigma takes (else the validation stars of every
#: exposure, whose epochs the weights saw: measured, their calibration under-covers unseen
#: epochs, 53-71 % at +-1 sigma on a 64-exposure focus sweep).
CALIBRATION_MIN = 200


def _calibrate(model, store, chip, seed, target, features, flux) -> dict:
    """The calibration of sigma (model.uncertainty.calibrate) on the stars the weights never
    trained on (validation and test splits) in the held-out exposures: PSF epochs and star images
    the network never saw, as on a user's archive epoch. Where they hold fewer than
    CALIBRATION_MIN rasters (a small set), on the validation stars of every exposure, and the
    calibration says so."""
    from starcenter.model.bridge import RasterSource
    from starcenter.model.uncertainty import calibrate, covariate_names, errors_on

    src = RasterSource(store, chip, "unseen", seed, target, features, flux, "holdout")
    on = "stars not trained on (validation + test splits) of the held-out exposures (epochs the weights never saw)"
    if src.count() < CALIBRATION_MIN:
        src = RasterSource(store, chip, "validation", seed, target, features, flux, "all")
        on = "validation stars of every exposure (too few held-out rasters)"
    return {**calibrate(*errors_on(model, src), names=covariate_names(features)), "on": on}


def load_metadata(model_path) -> dict:
    p = metadata_path(model_path)
    if not p.exists():
        raise BadArgumentError(f"{model_path}: no metadata file {p.name}; was it made by starcenter train?")
    return json.loads(p.read_text())
