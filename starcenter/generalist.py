"""``starcenter generalist``: centring networks trained across the PSF space (the generalist recipe).

SIMULATION training set, one per filter, built by the pipeline's own stages (out of core,
resumable): every exposure's true focus drawn from FOCUS_RANGE (1 um breathing within it), the
field-varying PSF on, the chips asked for; ``psf --fit focus``, ``detect --psf fitted`` (each
exposure's own PSF epoch, so the crowding cut applies), then ``catalog`` over the whole chip
(``central`` 1: stars anywhere on the chip become rasters). One network per chip: VGG6 V2 with
sigma and flux outputs (:mod:`starcenter.model.uncertainty`), inputs raster + FEATURES
(instrumental magnitude, the exposure's fitted focus, the place on the chip, the classical fit's
centre, to which the network adds its correction), exact targets,
the fast recipe; sigma calibrated on held-out exposures and, with ``calibration_exposures``, again
on every star of a calibration set of its own (another seed: stars and PSF epochs the networks
never saw; :func:`starcenter.model.uncertainty.recalibrate`), where a network that corrects the
classical fit first gets the weight of its correction (:mod:`starcenter.model.correction`).

``--install`` copies the models, without their optimizer state, into the package
(:data:`starcenter.model.predict.SHIPPED`), each with its training provenance in its metadata:
``starcenter predict STORE`` without ``--model`` uses them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from starcenter.cubes import pipeline
from starcenter.cubes.params import DetectParams, PSFFitParams, RasterParams, TransformParams
from starcenter.cubes.sim.simulate import make_config

#: True focus range of the training exposures (um, secondary-mirror despace vs the library): the
#: PSF-epoch fit's grid (PSFFitParams), so every epoch the fit can measure is one the networks saw
#: (the secondary mirror was at +16.6 um in 1998); an epoch beyond it is flagged by the fit and the
#: generalist gives no centre there (``no_feature``). The first models: -10..+15 um.
FOCUS_RANGE = (PSFFitParams.grid_min, PSFFitParams.grid_max)
#: The networks' per-star inputs beside the raster (starcenter.model.bridge.FEATURES): Paper II's
#: magnitude and place on the chip, the fitted PSF epoch and the classical centre, which the
#: network corrects (bridge.SKIP). The first models (and the F814W ones) took the first four only.
FEATURES = ("mag", "focus", "chip_x", "chip_y", "classical_x", "classical_y")
#: Seed of a filter's calibration set = the training seed + this (other stars, other PSF epochs).
CALIBRATION_SEED_OFFSET = 1000
#: The defaults (the first shipped F555W models' recipe; the models shipped now trained on other
#: sets and epochs: each model's metadata and the README say which): training exposures per
#: filter, epochs, calibration-set exposures. On 2 CPU cores a chip takes
#: 30-60 min to train (70,000-100,000 rasters), two side by side. Measured (SIMULATION,
#: bench_generalist, unseen +4.5 um epoch, robust error over the bound at 1e4-3e4 / 3e4-1e5 e-,
#: -10..+15 um): 32 exposures and 30 epochs gave WF3 1.24 / 1.68x, 128 and 100 give 1.06 / 1.21x.
EXPOSURES, EPOCHS, CALIBRATION_EXPOSURES = 128, 100, 48
#: How the calibration set calibrates sigma (model.uncertainty.calibrate), recorded with the set: a
#: model calibrated by an earlier method is calibrated again on a rerun.
CALIBRATION_METHOD = "quantile regression, then a residual factor piecewise linear in magnitude"


def training_config(filt: str, chips, exposures: int, seed: int):
    """The simulation of a generalist training set (SIMULATION, see the module docstring)."""
    return make_config("demo", chips=tuple(chips), filter=filt, n_exposures=exposures, focus_sweep_um=FOCUS_RANGE,
                       focus_sweep_range=True, breathing_um=1.0, field_varying=True, seed=seed)


def build_set(path, cfg, cluster_options=None, progress: bool = True, neighbours: str = "keep",
              neighbour_passes: int = 0) -> Path:
    """Simulate, fit each exposure's PSF epoch, detect with it (``neighbour_passes``: refits on
    the image minus the neighbours, DetectParams) and catalog the whole chip (rasters with their
    ``neighbours`` kept or subtracted: RasterParams.neighbours)."""
    path = Path(path)
    detect = DetectParams("fitted", neighbour_passes=neighbour_passes)
    pipeline.run(path, "simulate", "simulate", {"simulate": {"config": cfg}}, cluster_options, progress)
    pipeline.run(path, "psf", "psf", {"psf": {"kind": "fitted", "fit": PSFFitParams()}}, cluster_options, progress)
    pipeline.run(path, "detect", "detect", {"detect": {"params": detect}}, cluster_options, progress)
    pipeline.run_catalog(path, transform_params=TransformParams(central=1.0), cluster_options=cluster_options,
                         progress=progress, raster_params=RasterParams(neighbours=neighbours))
    return path


def model_name(chip: str, filt: str) -> str:
    return f"generalist-{chip}-{filt}.keras"


def member_name(chip: str, filt: str, k: int) -> str:
    """File of an ensemble's member ``k`` (1..): the ensemble itself is :func:`model_name`."""
    return f"generalist-{chip}-{filt}-m{k}.keras"


def _jobs(out: Path, filt: str, chips, exposures: int, epochs: int, arch: str, seed: int, members: int,
          features=FEATURES):
    """{training-set seed: (config, store, training jobs)}: one network per chip (``members`` 1),
    or per chip member 1 on the set of ``seed`` (initial seed 0) and members 2.. on a second set
    (``seed`` + 1, initial seeds 1..): other stars, other PSF epochs, other weights."""
    def job(store, chip, k, init):
        name = model_name(chip, filt) if members == 1 else member_name(chip, filt, k)
        return dict(store=str(store), chip=chip, arch=arch, recipe="fast", epochs=epochs, out=str(out / name),
                    seed=init, target="exact", verbose=0, uncertainty=True, features=tuple(features), flux=True)

    sets = {}
    for s, ks in ((seed, [1]), (seed + 1, list(range(2, members + 1)))):
        if ks:
            store = out / (f"train-{filt}.zarr" if s == seed else f"train-{filt}-seed{s}.zarr")
            sets[s] = (training_config(filt, chips, exposures, s), store,
                       [job(store, chip, k, k - 1) for k in ks for chip in chips])
    return sets


def _adopt_single(out: Path, filt: str, chips) -> None:
    """A network trained by an earlier single-model run becomes member 1 (resumed as an ensemble)."""
    from starcenter.model.train import load_metadata

    for chip in chips:
        single, first = out / model_name(chip, filt), out / member_name(chip, filt, 1)
        if single.exists() and not first.exists() and "ensemble" not in load_metadata(single):
            os.replace(single.with_name(single.name + ".json"), first.with_name(first.name + ".json"))
            os.replace(single, first)
            history = single.with_name(single.name + ".history.csv")
            if history.exists():  # its training history goes with it
                os.replace(history, first.with_name(first.name + ".history.csv"))


def run_generalist(outdir, filters=("F555W",), chips=("PC1", "WF2", "WF3", "WF4"), exposures: int = EXPOSURES,
                   epochs: int = EPOCHS, arch: str = "v2", seed: int = 1, install: bool = False,
                   calibration_exposures: int = CALIBRATION_EXPOSURES, members: int = 1, cluster_options=None,
                   progress: bool = True, neighbours: str = "keep", features=FEATURES,
                   neighbour_passes: int = 0) -> list[Path]:
    """Build the training set of every filter (only where a model is still to train), train one
    network per chip (two at a time) or, with ``members`` > 1, that many per chip combined into
    an ensemble (:mod:`starcenter.model.ensemble`; :func:`_jobs` says on what each trains), with
    ``calibration_exposures`` recalibrate each sigma on a calibration set of that many exposures,
    and return the model paths; ``install``: also copy them into the package (SHIPPED);
    ``neighbours``: the rasters of every set keep or subtract their neighbours (start a new
    ``outdir`` to change it: trained models are kept); ``features``: the networks' per-star inputs
    (with ``classical_x``, ``classical_y`` a network corrects the classical fit: model.bridge.SKIP);
    ``neighbour_passes``: every set's detections refitted that many times without their neighbours
    (the classical centres such a network corrects; ``detect --neighbour-passes``). Resumable: trained models and done calibrations are kept."""
    from starcenter.model.ensemble import combine, is_current
    from starcenter.model.parallel import train_many

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for filt in filters:
        if members > 1:
            _adopt_single(out, filt, chips)
        sets = _jobs(out, filt, chips, exposures, epochs, arch, seed, members, features)
        todo = [j for cfg, store, jobs in sets.values() for j in jobs if not Path(j["out"] + ".json").exists()]
        for cfg, store, jobs in sets.values():
            if any(j in todo for j in jobs):
                build_set(store, cfg, cluster_options, progress, neighbours, neighbour_passes)
        train_many(todo, workers=2, progress=(lambda job: print(f"== trained {Path(job['out']).name}", flush=True))
                   if progress else None)
        for cfg, store, jobs in sets.values():
            for job in jobs:
                _add_provenance(Path(job["out"]), cfg, epochs, neighbours, job["features"], neighbour_passes)
        paths = [out / model_name(chip, filt) for chip in chips]
        if members > 1:
            for chip, path in zip(chips, paths):
                parts = [out / member_name(chip, filt, k) for k in range(1, members + 1)]
                if not is_current(parts, path):  # a member trained again: combined again
                    combine(parts, path)
        if calibration_exposures:
            calibrate_on_own_set(out, filt, chips, calibration_exposures, seed, paths, cluster_options,
                                 progress, neighbours, neighbour_passes)
        done += paths
    if install:
        for path in done:
            ship(path)
    return done


def calibrate_on_own_set(out: Path, filt: str, chips, exposures: int, seed: int, paths, cluster_options=None,
                         progress: bool = True, neighbours: str = "keep", neighbour_passes: int = 0) -> None:
    """Recalibrate the sigma of each model in ``paths`` (one per chip of ``chips``) on every star
    of a calibration set (SIMULATION, the training recipe with seed + CALIBRATION_SEED_OFFSET),
    after the correction weight of a model that corrects the classical fit (model.correction);
    the set is recorded in the metadata ("generalist" / "calibration_set"), a model already
    calibrated on it is skipped."""
    from starcenter.model.bridge import SKIP
    from starcenter.model.correction import calibrate_weight
    from starcenter.model.train import _write_atomic, load_metadata, metadata_path
    from starcenter.model.uncertainty import recalibrate

    cfg = training_config(filt, chips, exposures, seed + CALIBRATION_SEED_OFFSET)
    record = {"simulation": json.loads(cfg.to_json()), "stars": "all", "degree": 2, "sigma_covariate": True,
              "method": CALIBRATION_METHOD}
    if neighbours != "keep":  # the record of models calibrated on rasters as cut stays as it was
        record["rasters"] = neighbours
    if neighbour_passes:
        record["neighbour_passes"] = neighbour_passes
    store = None
    for path, chip in zip(paths, chips):
        meta = load_metadata(path)
        weighted = set(SKIP) <= set(meta.get("features") or ())
        mine = {**record, "correction_weight": True} if weighted else record
        if meta.get("generalist", {}).get("calibration_set") == mine:
            continue
        store = store or build_set(out / f"calib-{filt}.zarr", cfg, cluster_options, progress, neighbours,
                                   neighbour_passes)
        if weighted:
            cw = calibrate_weight(path, store, chip)
            if progress:
                print(f"== {path.name}: correction weight {cw['weight']} (magnitudes {cw['mag_edges']})", flush=True)
        cal = recalibrate(path, store, chip, stars=record["stars"], degree=record["degree"],
                          sigma_covariate=record["sigma_covariate"])
        meta = load_metadata(path)
        meta["generalist"]["calibration_set"] = mine
        _write_atomic(metadata_path(path), json.dumps(meta, indent=1))
        if progress:
            print(f"== {path.name}: sigma calibrated on {cal['n']} rasters of {store.name}", flush=True)


def _add_provenance(path: Path, cfg, epochs: int, neighbours: str = "keep", features=FEATURES,
                    neighbour_passes: int = 0) -> None:
    meta_path = path.with_name(path.name + ".json")
    meta = json.loads(meta_path.read_text())
    if "generalist" in meta:  # written when it was trained: a rerun keeps it
        return
    meta["generalist"] = {
        "label": "trained on SIMULATIONS only (starcenter generalist)",
        "simulation": json.loads(cfg.to_json()), "focus_range_um": list(FOCUS_RANGE),
        "detect": "fitted ePSF (psf --fit focus)" + (f", {neighbour_passes} neighbour passes" if neighbour_passes
                                                      else ""), "catalog_central": 1.0, "epochs": epochs,
        "features": list(features), "rasters": f"neighbours {neighbours}"}
    meta_path.write_text(json.dumps(meta, indent=1))


def ship(path) -> Path:
    """Copy a trained model into the package (:data:`starcenter.model.predict.SHIPPED`) without
    its optimizer state (a third of the size), with its metadata."""
    from starcenter.model.predict import SHIPPED, load_model

    path = Path(path)
    SHIPPED.mkdir(parents=True, exist_ok=True)
    dest = SHIPPED / path.name
    model = load_model(str(path))
    if not (dest.exists() and _same_weights(model, dest)):  # a recalibration leaves the file as it is
        model.save(dest)  # loaded uncompiled: saved without the optimizer
    shutil.copyfile(path.with_name(path.name + ".json"), dest.with_name(dest.name + ".json"))
    return dest


def _same_weights(model, path: Path) -> bool:
    """Whether the model file at ``path`` holds exactly ``model``'s weights."""
    import numpy as np

    from starcenter.model.predict import load_model

    other, mine = load_model(str(path)).get_weights(), model.get_weights()
    return len(mine) == len(other) and all(np.array_equal(a, b) for a, b in zip(mine, other))
