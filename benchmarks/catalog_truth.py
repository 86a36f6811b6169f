"""Average-catalog truth against exact simulated truth, first and second iteration (issue #5).

    python benchmarks/catalog_truth.py STORE.zarr [--exposures 636] [--chips PC1,WF2,WF3,WF4]
        [--seed 0] [--workers 2] [--out STORE.truth.json]

SIMULATION (the gilliland preset unless ``--exposures`` / ``--chips`` shrink it; a store that
exists is reused and every stage resumes):
1. first iteration, the paper's: detect with the library ePSF -> catalog;
2. the classical second iteration: catalog ePSF (Anderson & King, at the catalog's positions)
   -> detect with it and two neighbour-subtraction passes -> catalog with the stacked-residual
   crowding cut.
After each, per chip: catalog truth - exact truth (rms and median |d| per coordinate, mpix, over
the kept stars' rasters, each exposure's mean difference removed), kept stars and rasters, and
the classical standard error against offset phase (the W/V curves, flatness = max/min of the 5
binned medians; PNGs STORE.phase-first.png / .phase-second.png). The catalog stage's wall time and peak RSS (client and largest worker) are
printed: the floor is < 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GiB = 2**30


def _figures(store, png, title) -> dict:
    import xarray as xr

    from starcenter.evaluation.metrics import catalog_vs_exact, classical_curves, phase_data
    from starcenter.evaluation.plots import plot_phase_curves

    plot_phase_curves({"classical": phase_data(store)}, png, f"SIMULATION: {title}")
    cve = catalog_vs_exact(store)
    curves = classical_curves(store)
    ras = xr.open_zarr(str(store), group="rasters")
    out = {}
    for k, chip in enumerate(str(c) for c in ras.chip.values):
        out[chip] = {**cve[chip], "kept_stars": int(ras["selected"].isel(chip=k).sum()),
                     "std_err_curve_x_mpix": curves[chip]["x"]["curve_mpix"],
                     "flatness_x": curves[chip]["x"]["flatness"],
                     "flatness_y": curves[chip]["y"]["flatness"]}
    return out


def _print(title, figs):
    print(f"\n## {title} (SIMULATION)")
    print("| chip | truth - exact rms x / y | median abs x / y | kept stars | rasters | "
          "std err vs phase x (5 bins) | flatness x / y |")
    print("|---|---|---|---|---|---|---|")
    for chip, f in figs.items():
        print(f"| {chip} | {f['rms_mpix'][0]:.2f} / {f['rms_mpix'][1]:.2f} | "
              f"{f['median_abs_mpix'][0]:.2f} / {f['median_abs_mpix'][1]:.2f} | {f['kept_stars']} | "
              f"{f['n_rasters']} | {f['std_err_curve_x_mpix']} | {f['flatness_x']:.2f} / {f['flatness_y']:.2f} |")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--exposures", type=int, default=None, help="default: the preset's 636")
    ap.add_argument("--chips", default=None, help="default: the preset's four")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from _rss import PeakRSS
    from distributed import Client, LocalCluster

    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.sim.simulate import make_config

    kw = {"seed": a.seed}
    if a.exposures:
        kw["n_exposures"] = a.exposures
    if a.chips:
        kw["chips"] = tuple(a.chips.upper().split(","))
    cfg = make_config("gilliland", **kw)
    store = a.store
    res = {"data": f"SIMULATION gilliland preset, {cfg.n_exposures} exposures, chips {list(cfg.chips)}, "
                   f"seed {a.seed}"}
    second = DetectParams("catalog", neighbour_passes=2)

    def catalog_stage(key):
        with PeakRSS(dt=0.5) as rss:
            t0 = time.perf_counter()
            run_catalog(store)
            wall = time.perf_counter() - t0
        w = max(rss.workers.values(), default=0)
        res[key] = {"wall_s": round(wall, 1), "peak_rss_client_gib": round(rss.client / GiB, 2),
                    "peak_rss_worker_gib": round(w / GiB, 2)}
        print(f"## catalog: {wall:.1f} s, peak RSS client {rss.client / GiB:.2f} GiB, largest worker "
              f"{w / GiB:.2f} GiB", flush=True)

    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print(f"{res['data']}; {a.workers} workers; dashboard {client.dashboard_link}", flush=True)
        pipeline.run_stage("simulate", store, config=cfg)
        done_second = (st.has_group(store, "detections")
                       and st.open_group(store, "detections").attrs.get("params") == second.to_json())
        if not done_second:
            pipeline.run_stage("detect", store, params=DetectParams("library"))
            catalog_stage("catalog_first")
            title = "first iteration: library ePSF"
            res["first"] = _figures(store, str(store) + ".phase-first.png", title)
            _print(title, res["first"])
        pipeline.run(store, "psf", "detect", {"detect": {"params": second, "overwrite": True}})
        catalog_stage("catalog_second")
        title = "second iteration: catalog ePSF, neighbour subtraction, crowding cut"
        res["second"] = _figures(store, str(store) + ".phase-second.png", title)
        _print(title, res["second"])
    out = Path(a.out or str(store) + ".truth.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"figures in {out}")
    return res


if __name__ == "__main__":
    main()
