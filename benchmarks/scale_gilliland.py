"""Scale benchmark (issue #8): the gilliland preset through every stage on dask.distributed.

    python benchmarks/scale_gilliland.py STORE.zarr [--exposures 636] [--workers 2]
        [--train-epochs 3] [--out scale.json]

SIMULATION: 636 exposures x 4 chips (~6.5 GB of pixels) -> simulate -> detect (library ePSF)
-> catalog (transforms, average catalog, rasters) -> train (VGG6 V2, fast recipe, capped at
``--train-epochs`` epochs per chip: training on the full set is not the point here) -> predict
-> evaluate, on a LocalCluster (one single-threaded worker per core, dashboard on 127.0.0.1).
Prints and writes, per stage: wall time, throughput and the peak RSS of the client (this
process) and of the largest worker. Every stage resumes: rerunning skips what is done (then the
figures measure only the remainder). The floor: peak RSS under 3 GiB per worker.
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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--exposures", type=int, default=None, help="default: the preset's 636")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON of the figures (default STORE.scale.json)")
    a = ap.parse_args(argv)

    import xarray as xr
    from _rss import PeakRSS
    from distributed import Client, LocalCluster

    from starcenter.cubes import pipeline, schema
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.sim.simulate import make_config
    from starcenter.evaluation.report import evaluate
    from starcenter.model.train import train

    cfg = make_config("gilliland", **({"n_exposures": a.exposures} if a.exposures else {}))
    store = a.store
    models = Path(str(store) + ".models")
    n_chunks = cfg.n_exposures * len(cfg.chips)
    rows = []

    def stage(name, fn, unit, count=None):
        with PeakRSS(dt=0.5) as rss:
            t0 = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - t0
        n = count(out) if count else n_chunks
        w = max(rss.workers.values(), default=0)
        row = {"stage": name, "wall_s": round(wall, 1), "throughput": round(n / wall, 2),
               "unit": f"{unit}/s", "count": n, "peak_rss_client_gib": round(rss.client / GiB, 2),
               "peak_rss_worker_gib": round(w / GiB, 2)}
        rows.append(row)
        print(f"## {name}: {wall:.1f} s, {n / wall:.2f} {unit}/s ({n} {unit}), peak RSS client "
              f"{rss.client / GiB:.2f} GiB, largest worker {w / GiB:.2f} GiB", flush=True)
        return out

    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print(f"SIMULATION, gilliland preset: {cfg.n_exposures} exposures x {len(cfg.chips)} chips; "
              f"{a.workers} workers; dashboard {client.dashboard_link}", flush=True)
        stage("simulate", lambda: pipeline.run_stage("simulate", store, config=cfg), "exposure-chips")
        stage("detect", lambda: pipeline.run_stage("detect", store, params=DetectParams("library")), "exposure-chips")
        stage("catalog", lambda: run_catalog(store), "rasters",
              lambda ras: int(ras["mask"].sum()))
        n_rasters = rows[-1]["count"]

        def train_all():
            return [train(store, chip, "v2", "fast", a.train_epochs, models / f"{chip}-v2.keras",
                          verbose=0)["n_train"] * a.train_epochs for chip in cfg.chips]

        stage("train (V2, capped epochs)", train_all, "samples", lambda n: int(sum(n)))

        def predict_all():
            for chip in cfg.chips:
                pipeline.run_stage("predict", store, model_path=models / f"{chip}-v2.keras", name="vgg6-v2-scale", chip=chip)
            return n_rasters

        stage("predict", predict_all, "rasters", lambda n: n)
        stage("evaluate", lambda: evaluate(store, str(store) + ".report",
                                           "SIMULATION gilliland preset (scale benchmark)"),
              "exposure-chips")
    size = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file()) / GiB
    ex = xr.open_zarr(str(store), group=schema.EXPOSURES)
    res = {"data": "SIMULATION gilliland preset", "exposures": cfg.n_exposures,
           "chips": list(cfg.chips), "workers": a.workers, "store_gib": round(size, 2),
           "pixels_gib": round(ex["image"].nbytes / GiB, 2), "stages": rows,
           "floor_worker_rss_under_3gib": all(r["peak_rss_worker_gib"] < 3 for r in rows)}
    out = Path(a.out or str(store) + ".scale.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"store {size:.2f} GiB on disk ({res['pixels_gib']} GiB of float32 pixels); figures in {out}")
    return res


if __name__ == "__main__":
    main()
