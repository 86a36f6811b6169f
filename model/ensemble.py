"""Ensembles of centring networks: one model file whose outputs are the mean of its members'.

Members are models written by ``starcenter train`` for the same chip, filter, raster size,
per-star inputs and outputs, trained with other seeds (other weights at the start, other stars,
another training set). The ensemble is an ordinary Keras model (the members nested, a Keras
``Average`` layer, loadable in safe mode), so ``predict``, ``calibrate`` and the benchmarks take
it as they take one network. Its output is the members' mean: the centre (raster px), the flux
output (dlogF) and the log sigma (a geometric mean of the raw sigmas). The mean's errors are
smaller than a member's, so its sigma must be calibrated again (:func:`starcenter.model.
uncertainty.recalibrate`); until then the ensemble carries its first member's calibration, which
overstates its sigma (conservative).

Why (SIMULATION, bench_generalist, WF3 F555W, unseen +4.5 um epoch, isolated stars 3e4-1e5 e-):
the shipped 3-member ensemble gives 4.34 mpix against 4.96 / 5.01 for one member, the classical
fitted ePSF 3.56: the members' excesses over the fit are partly independent, so averaging removes
part of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from starcenter.cubes.errors import BadArgumentError
from starcenter.model import quiet_tensorflow
from starcenter.model.train import _write_atomic, load_metadata, metadata_path

#: What the members must share (their metadata's entries).
MUST_AGREE = ("chip", "filter", "raster_size", "normalization", "outputs", "features", "target")


def _member_record(path: Path, meta: dict) -> dict:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
            "architecture": meta.get("architecture"), "split_seed": meta.get("split_seed"),
            "dataset": meta.get("dataset"), "datasets": meta.get("datasets"), "generalist": meta.get("generalist"),
            "epochs": meta.get("epochs"), "n_train": meta.get("n_train"), "calibration": meta.get("calibration")}


def check_members(paths) -> list[dict]:
    """The members' metadata; a clear error naming the file if one is missing, is itself an
    ensemble, or disagrees with the first on what it reads or predicts (MUST_AGREE)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise BadArgumentError(f"an ensemble needs at least two models, got {len(paths)}")
    if len({p.resolve() for p in paths}) < len(paths):
        raise BadArgumentError("the same model is named twice: an ensemble's members must differ")
    metas = [load_metadata(p) for p in paths]
    for path, meta in zip(paths, metas):
        if "ensemble" in meta:
            raise BadArgumentError(f"{path}: already an ensemble; name its members instead")
        diff = [k for k in MUST_AGREE if meta.get(k) != metas[0].get(k)]
        if diff:
            raise BadArgumentError(f"{path}: differs from {paths[0].name} in " + ", ".join(
                f"{k} ({meta.get(k)!r} vs {metas[0].get(k)!r})" for k in diff))
    return metas


def is_current(paths, out) -> bool:
    """Whether ``out`` is the ensemble of exactly the models now at ``paths`` (same files, same bytes)."""
    out = Path(out)
    if not (out.exists() and metadata_path(out).exists()):
        return False
    have = [(m["file"], m["sha256"]) for m in load_metadata(out).get("ensemble", {}).get("members", [])]
    return have == [(Path(p).name, hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]) for p in paths]


def combine(paths, out) -> Path:
    """Write the ensemble of the models at ``paths`` to ``out`` (a ``.keras`` file, its metadata
    beside it: the first member's, ``architecture`` "ensemble", ``ensemble`` naming each member
    with its provenance, the first member's calibration until recalibrated) and return ``out``.
    Written atomically: a file already at ``out`` is replaced only once the new one is complete."""
    quiet_tensorflow()
    import keras

    from starcenter.model.predict import load_model

    paths, out = [Path(p) for p in paths], Path(out)
    metas = check_members(paths)
    members = [load_model(str(p)) for p in paths]
    inputs = [keras.Input(shape=t.shape[1:], name=t.name.split(":")[0] or f"input_{i}")
              for i, t in enumerate(members[0].inputs)]
    outs = []
    for k, member in enumerate(members):
        clone = keras.models.clone_model(member)  # a fresh graph of its own, so names can differ
        clone.set_weights(member.get_weights())
        clone.name = f"member_{k + 1}"
        outs.append(clone(inputs if len(inputs) > 1 else inputs[0]))
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], keras.layers.Average(name="mean")(outs),
                        name="ensemble")
    tmp = out.with_name(out.stem + ".tmp.keras")
    model.save(tmp)
    meta = {k: v for k, v in metas[0].items() if k not in ("calibration", "calibration_before", "history")}
    if "generalist" in meta:  # the first member's calibration set calibrated it, not the ensemble
        meta["generalist"] = {k: v for k, v in meta["generalist"].items() if k != "calibration_set"}
    first = metas[0].get("calibration")
    first = first and {**first, "on": f"{paths[0].name}'s calibration (a member's: it overstates the ensemble's "
                                      f"sigma; recalibrate) made on {first.get('on')}"}
    meta.update(architecture="ensemble", parameters=int(model.count_params()), calibration=first,
                ensemble={"combine": "mean of the members' outputs (centre, dlogF, log sigma)",
                          "members": [_member_record(p, m) for p, m in zip(paths, metas)]})
    os.replace(tmp, out)
    _write_atomic(metadata_path(out), json.dumps(meta, indent=1))
    return out
