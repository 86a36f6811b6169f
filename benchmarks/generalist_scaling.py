"""Is a generalist limited by its training rasters or by its capacity? (issue #13)

Trains generalists (sigma and flux outputs, the features of ``starcenter generalist``) on the
training rasters of one or several simulated sets, exported once to a .npz, so the training can
go wherever compute is (any Keras 3 backend, GPU or CPU; it needs keras, numpy and this
repository, not tensorflow or zarr). The trained files come back as ordinary Keras files; the
held-out scoring is then ``bench_generalist``'s, on this machine.

    # 1. here: each STORE's train / validation rasters of the fitted exposures (as model.train
    #    splits them with the given split seed) to one .npz
    python benchmarks/generalist_scaling.py export OUT.npz --chip WF2 STORE:SEED [STORE:SEED ...]
    # 2. anywhere: VARIANT = NAME:ARCH:PARTS:EPOCHS (PARTS: + separated part numbers of the .npz)
    KERAS_BACKEND=jax python benchmarks/generalist_scaling.py run OUT.npz DIR v2-both:v2:0+1:100 ...
       [--budget-s 400]

``run`` trains each variant with the ``fast`` recipe (Adam 1e-3, batch 64, cosine, best
validation centres restored); with ``--budget-s`` the cosine schedule is shortened after the
first epoch so that the run ends within the budget (the epochs done are recorded). Each variant
writes DIR/NAME.keras and DIR/NAME.json (history, epochs, seconds, parts, counts);
``assemble DIR NAME`` (here) rebuilds DIR/NAME.keras with this backend, uncompiled, as the
package's own models are.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The inputs of the shipped generalists (starcenter.generalist.FEATURES; not imported: it needs
#: zarr, which the GPU host lacks), and where the classical centre among them goes to x, y
#: (model.bridge.skip_indices).
FEATURES = ("mag", "focus", "chip_x", "chip_y", "classical_x", "classical_y")


def skip_of(features) -> tuple[int, ...]:
    """Indices of the classical centre among ``features`` (() without it): bridge.skip_indices."""
    features = list(features)
    return tuple(features.index(f) for f in ("classical_x", "classical_y")) if "classical_x" in features else ()


SKIP = skip_of(FEATURES)


class FAST:
    """model.train.RECIPES["fast"] (checked by tests/test_generalist_scaling.py)."""

    learning_rate, batch_size = 1e-3, 64


def export(out: str, chip: str, parts: list[str]) -> None:
    import zarr

    from starcenter.model.bridge import RasterSource

    arrays, label = {}, []
    for k, spec in enumerate(parts):
        store, seed = spec.rsplit(":", 1)
        for subset in ("train", "validation"):
            src = RasterSource(store, chip, subset, int(seed), "exact", FEATURES, True, "fit")
            (x, f), y = src.to_numpy()
            arrays[f"x_{subset}_{k}"], arrays[f"f_{subset}_{k}"], arrays[f"y_{subset}_{k}"] = x[..., 0], f, y
        attrs = dict(zarr.open_group(store, mode="r").attrs)
        label.append({"store": store, "split_seed": int(seed), "n_train": len(arrays[f"y_train_{k}"]),
                      "n_validation": len(arrays[f"y_validation_{k}"]),
                      "source": "SIMULATION" if "starcenter_simulation" in attrs else "REAL DATA"})
        print(f"part {k}: {store} (split seed {seed}): {label[-1]['n_train']} train, "
              f"{label[-1]['n_validation']} validation rasters", flush=True)
    np.savez(out, label=json.dumps({"chip": chip, "features": FEATURES, "parts": label}), **arrays)


def _join(d, subset: str, parts: list[int]):
    x = np.concatenate([d[f"x_{subset}_{k}"] for k in parts])[..., None]
    f = np.concatenate([d[f"f_{subset}_{k}"] for k in parts])
    y = np.concatenate([d[f"y_{subset}_{k}"] for k in parts])
    return [x, f], y


def train_variant(npz: str, outdir: str, spec: str, budget_s: float | None, seed: int) -> dict:
    import keras

    from starcenter.model.architectures import build
    from starcenter.model.uncertainty import centre_mae, gaussian_nll

    name, arch, parts, epochs = spec.split(":")
    parts, epochs = [int(p) for p in parts.split("+")], int(epochs)
    d = np.load(npz)
    label = json.loads(str(d["label"]))
    xt, yt = _join(d, "train", parts)
    xv, yv = _join(d, "validation", [k for k in range(len(label["parts"]))])  # every part's
    rc = FAST
    keras.utils.set_random_seed(seed)
    model = build(arch, 6, len(FEATURES), True, True, SKIP)
    # as model.train.compile_model (not imported: model.train needs zarr, absent on the GPU host)
    model.compile(optimizer=keras.optimizers.Adam(rc.learning_rate), loss=gaussian_nll,
                  metrics=[centre_mae], steps_per_execution=16)
    plan = {"epochs": epochs}
    t0 = time.perf_counter()

    class Budget(keras.callbacks.Callback):
        """Cosine from the recipe's rate over plan['epochs']; after epoch 2, plan['epochs'] is cut
        to what fits in budget_s."""

        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(
                rc.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / plan["epochs"])))

        def on_epoch_end(self, epoch, logs=None):
            plan[epoch] = time.perf_counter()
            if epoch == 1 and budget_s:  # the second epoch's time: the first one compiles
                per = plan[1] - plan[0]
                plan["epochs"] = max(3, min(plan["epochs"], int((budget_s - (plan[1] - t0)) / per) + 2))
                print(f"{name}: {per:.1f} s/epoch, {plan['epochs']} epochs", flush=True)
            if epoch + 1 >= plan["epochs"]:
                self.model.stop_training = True

    best = keras.callbacks.EarlyStopping("val_centre_mae", patience=10**6, mode="min",
                                         restore_best_weights=True)
    hist = model.fit(xt, yt, batch_size=rc.batch_size, epochs=epochs, validation_data=(xv, yv),
                     callbacks=[Budget(), best], verbose=0, shuffle=True)
    wall = time.perf_counter() - t0
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / f"{name}.keras")
    res = {"name": name, "arch": arch, "parts": [label["parts"][k] for k in parts], "seed": seed,
           "planned_epochs": epochs, "epochs": len(hist.history["loss"]), "seconds": round(wall, 1),
           "backend": keras.backend.backend(), "n_train": len(yt), "n_validation": len(yv),
           "chip": label["chip"], "features": label["features"], "parameters": model.count_params(),
           "history": {k: [float(v) for v in vals] for k, vals in hist.history.items()}}
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    print(f"{name}: {res['epochs']} epochs in {wall:.0f} s, best validation centre MAE "
          f"{1e3 * min(res['history']['val_centre_mae']):.2f} mpix ({len(yt)} training rasters)", flush=True)
    return res


def assemble(outdir: str, name: str) -> Path:
    """DIR/NAME.keras rebuilt: the variant's architecture with its trained weights, uncompiled."""
    from starcenter.model.architectures import build

    out = Path(outdir)
    res = json.loads((out / f"{name}.json").read_text())
    model = build(res["arch"], 6, len(res["features"]), True, True, skip_of(res["features"]))
    model.load_weights(out / f"{name}.keras")
    model.save(out / f"{name}.keras")
    return out / f"{name}.keras"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("out")
    e.add_argument("--chip", required=True)
    e.add_argument("parts", nargs="+", help="STORE:SPLIT_SEED")
    r = sub.add_parser("run")
    r.add_argument("npz")
    r.add_argument("outdir")
    r.add_argument("variants", nargs="+", help="NAME:ARCH:PARTS:EPOCHS")
    r.add_argument("--budget-s", type=float, default=None)
    r.add_argument("--seed", type=int, default=0, help="initial weights")
    m = sub.add_parser("assemble")
    m.add_argument("outdir")
    m.add_argument("names", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        export(a.out, a.chip.upper(), a.parts)
    elif a.cmd == "assemble":
        for n in a.names:
            print(assemble(a.outdir, n))
    else:
        for v in a.variants:
            train_variant(a.npz, a.outdir, v, a.budget_s, a.seed)


if __name__ == "__main__":
    main()
