"""The ``fast`` training recipe against the paper's (issue #6): validation MAE per epoch.

The floor: ``fast`` reaches at least the ``paper`` recipe's validation MAE (its best over the
full 1000 epochs) in at most a tenth of the epochs. Both recipes train the same architecture
on the same rasters (same split) from the same initial weights; only the recipe differs.

Two steps, so the long run can go wherever compute is (any Keras 3 backend, GPU or CPU; it
needs only keras, numpy and this repository, not tensorflow or zarr):

    # 1. here: the train and validation rasters of one chip to a .npz (split as model.bridge)
    python benchmarks/recipe_comparison.py export STORE.zarr --chip WF3 --target exact --out wf3.npz
    # 2. anywhere: both recipes, then the figure and a JSON of both histories
    KERAS_BACKEND=jax python benchmarks/recipe_comparison.py run wf3.npz --arch v1 --out DIR

``run`` writes DIR/recipes_<chip>_<arch>.json and .png (labelled with the data set it was made
from) and prints the epochs each recipe needed to reach the paper recipe's best.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export(store: str, chip: str, target: str, seed: int, out: str) -> None:
    from starcenter.model.bridge import RasterSource

    arrays = {}
    for subset in ("train", "validation"):
        x, y = RasterSource(store, chip, subset, seed, target).to_numpy()
        arrays[f"x_{subset}"], arrays[f"y_{subset}"] = x, y
    import zarr

    attrs = dict(zarr.open_group(store, mode="r").attrs)
    label = {"store": store, "chip": chip, "target": target, "split_seed": seed,
             "source": "SIMULATION" if "starcenter_simulation" in attrs else "REAL DATA"}
    np.savez_compressed(out, label=json.dumps(label), **arrays)
    print(f"{out}: {len(arrays['x_train'])} train, {len(arrays['x_validation'])} validation rasters")


def run_recipe(name: str, arch: str, data, max_epochs: int | None, seed: int,
               steps_per_execution: int = 1) -> dict:
    import keras

    from starcenter.model.architectures import build
    from starcenter.model.train import RECIPES, compile_model, recipe_callbacks

    rc = RECIPES[name]
    keras.utils.set_random_seed(seed)  # same initial weights for both recipes
    model = build(arch, data["x_train"].shape[1])
    compile_model(model, rc, steps_per_execution)
    epochs = max_epochs or rc.max_epochs
    t0 = time.perf_counter()
    hist = model.fit(data["x_train"], data["y_train"], batch_size=rc.batch_size, epochs=epochs,
                     validation_data=(data["x_validation"], data["y_validation"]),
                     callbacks=recipe_callbacks(rc, epochs), verbose=0, shuffle=True)
    wall = time.perf_counter() - t0
    return {"recipe": name, "epochs": len(hist.history["val_loss"]), "seconds": round(wall, 1),
            "val_mae_mpix": [round(v * 1e3, 3) for v in hist.history["val_loss"]],
            "train_mae_mpix": [round(v * 1e3, 3) for v in hist.history["loss"]]}


def epochs_to_reach(curve, level) -> int | None:
    hit = np.flatnonzero(np.asarray(curve) <= level)
    return int(hit[0]) + 1 if hit.size else None


def run(npz: str, arch: str, out: str, paper_epochs: int | None, seed: int,
        fast_epochs: int | None = None, steps_per_execution: int = 1) -> dict:
    import keras

    d = np.load(npz)
    data = {k: d[k] for k in ("x_train", "y_train", "x_validation", "y_validation")}
    data = {k: v[..., None] if k.startswith("x") and v.ndim == 3 else v for k, v in data.items()}
    label = json.loads(str(d["label"]))
    res = {"data": label, "arch": arch, "backend": keras.backend.backend(),
           "steps_per_execution": steps_per_execution, "seed": seed,
           "n_train": len(data["x_train"]), "n_validation": len(data["x_validation"])}
    for name in ("fast", "paper"):
        r = run_recipe(name, arch, data, paper_epochs if name == "paper" else fast_epochs, seed,
                       steps_per_execution)
        print(f"{name}: {r['epochs']} epochs in {r['seconds']} s, best val MAE "
              f"{min(r['val_mae_mpix']):.2f} mpix", flush=True)
        res[name] = r
        _write(res, out, label, arch)  # partial results survive a time limit
    paper_best = min(res["paper"]["val_mae_mpix"])
    res["paper_best_mpix"] = paper_best
    res["fast_epochs_to_paper_best"] = epochs_to_reach(res["fast"]["val_mae_mpix"], paper_best)
    res["paper_epochs_to_paper_best"] = epochs_to_reach(res["paper"]["val_mae_mpix"], paper_best)
    n = res["fast_epochs_to_paper_best"]
    res["floor_met"] = n is not None and n <= res["paper"]["epochs"] / 10
    print(f"paper recipe best val MAE {paper_best:.2f} mpix (epoch {res['paper_epochs_to_paper_best']} "
          f"of {res['paper']['epochs']}); fast reaches it at epoch {n}; floor (<= 1/10 of the "
          f"paper's epochs) {'MET' if res['floor_met'] else 'NOT met'}", flush=True)
    _plot(res, _write(res, out, label, arch).with_suffix(".png"))
    return res


def _write(res: dict, out: str, label: dict, arch: str) -> Path:
    outd = Path(out)
    outd.mkdir(parents=True, exist_ok=True)
    stem = outd / f"recipes_{label['chip']}_{arch}_seed{res.get('seed', 0)}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    return stem


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in (("paper", "C0"), ("fast", "C3")):
        r = res[name]
        e = np.arange(1, r["epochs"] + 1)
        ax.plot(e, r["val_mae_mpix"], color=color, label=f"{name}: validation")
        ax.plot(e, r["train_mae_mpix"], color=color, ls=":", lw=0.8, label=f"{name}: training")
    ax.axhline(res["paper_best_mpix"], color="gray", lw=0.8, ls="--", label="paper recipe's best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MAE (mpix)")
    d = res["data"]
    ax.set_title(f"{d['source']}: {d['chip']} {res['arch'].upper()}, {res['n_train']} training "
                 f"rasters, target {d['target']} ({res['backend']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("store")
    e.add_argument("--chip", required=True)
    e.add_argument("--target", default="exact", choices=("exact", "catalog"))
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("npz")
    r.add_argument("--arch", default="v1")
    r.add_argument("--paper-epochs", type=int, default=None, help="default: the recipe's 1000")
    r.add_argument("--fast-epochs", type=int, default=None, help="default: the recipe's 100")
    r.add_argument("--steps-per-execution", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="recipe-comparison")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        export(a.store, a.chip.upper(), a.target, a.seed, a.out)
    else:
        run(a.npz, a.arch, a.out, a.paper_epochs, a.seed, a.fast_epochs, a.steps_per_execution)


if __name__ == "__main__":
    main()
