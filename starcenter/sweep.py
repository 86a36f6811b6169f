"""``starcenter sweep-raster-size``: centring error against raster size (the paper's Fig. 7).

For each size the store's rasters are cut again at that size, a network is trained on the
training split (fast recipe, capped epochs) and its error is measured on the test split (never
seen in training): against exact truth for simulations, against the average-catalog truth
otherwise. The store's rasters are then cut again with the parameters they had, so the store is
left as it was found (a sweep killed midway leaves rasters of another size: rerun the sweep, or
``starcenter catalog``, which restores them).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from starcenter.cubes import pipeline, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.stats import robust_sigma
from starcenter.cubes.params import RasterParams


def raster_size_sweep(store, chip: str, sizes=(4, 5, 6, 7, 8), arch: str = "v1",
                      epochs: int = 30, out_dir="raster-size-sweep", seed: int = 0,
                      progress: bool = True) -> dict:
    """Train and test one network per raster size; writes ``sweep.json`` and
    ``error_vs_raster_size.png`` into ``out_dir`` and returns the figures (mpix)."""
    from starcenter.model.bridge import RasterSource
    from starcenter.model.predict import forward, load_model
    from starcenter.model.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ras = st.open_group(store, schema.RASTERS)
    original = schema.read_params(ras, RasterParams)
    kind = "SIMULATION" if st.open_group(store, schema.EXPOSURES).attrs.get("source") == "simulation" \
        else "REAL DATA"
    target = "exact" if "target_exact" in ras else "catalog"
    rows = []
    try:
        for size in sizes:
            pipeline.run_stage("rasters", store, progress=progress, params=replace(original, size=int(size)))
            path = out_dir / f"{chip}-{arch}-s{size}.keras"
            meta = train(store, chip, arch, "fast", epochs, path, seed, target, verbose=0)
            x, y = RasterSource(str(store), chip, "test", seed, target).to_numpy()
            pred = forward(load_model(str(path)), x, 4096)
            d = (np.asarray(pred, np.float64) - y) * 1e3
            robust = robust_sigma(d, axis=0)
            row = {"size": int(size), "n_test": int(len(d)), "n_train": meta["n_train"],
                   "epochs": meta["epochs"], "rms_mpix": np.round(np.sqrt(np.mean(d**2, axis=0)), 2).tolist(),
                   "robust_mpix": np.round(robust, 2).tolist()}
            rows.append(row)
            if progress:
                print(f"raster {size}x{size}: test error robust x/y {row['robust_mpix']} mpix, "
                      f"rms {row['rms_mpix']} ({row['n_test']} test rasters)", flush=True)
    finally:
        pipeline.run_stage("rasters", store, progress=progress, params=original)  # leave the store's rasters as they were
    res = {"store": str(store), "kind": kind, "chip": chip, "arch": arch, "target": target,
           "epochs_cap": epochs, "sizes": rows}
    (out_dir / "sweep.json").write_text(json.dumps(res, indent=1))
    _plot(res, out_dir / "error_vs_raster_size.png")
    return res


def _plot(res: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starcenter.evaluation.plots import _save

    fig, ax = plt.subplots(figsize=(6, 4))
    s = [r["size"] for r in res["sizes"]]
    for a, ax_name in enumerate("xy"):
        ax.plot(s, [r["robust_mpix"][a] for r in res["sizes"]], "-o", label=f"{ax_name} robust sigma")
        ax.plot(s, [r["rms_mpix"][a] for r in res["sizes"]], ":s", ms=3, label=f"{ax_name} rms")
    ax.set_xlabel("raster size [px]")
    ax.set_ylabel(f"test error vs {res['target']} truth [mpix]")
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
    ax.set_title(f"{res['kind']}: {res['chip']} VGG6 {res['arch'].upper()}, error vs raster size "
                 "(Fig. 7 style)", fontsize=9)
    return _save(fig, path)
