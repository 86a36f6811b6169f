"""Benchmarks for the model stage (issue #6), printing their figures:

1. tf.data bridge: training samples/s streaming from the Zarr rasters cube vs from an in-memory
   numpy array, same model (VGG6 V1, batch 256), same number of steps. Target >= 0.9x.
2. predict: VGG6 V2 stars/s through `model.predict.predict` (dask, large batches). Target
   >= 5,000 stars/s on 2 cores.

    python benchmarks/bench_model.py [--store STORE.zarr --chip WF3]

Without --store a synthetic rasters cube (random rasters, 640 exposures x 400 stars) is written
to a temporary directory: throughput does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_store(path: Path, n_exposures: int = 640, n_stars: int = 400, size: int = 6):
    """A store with exposures attrs and a rasters group in the schema, random content."""
    import dask.array as da
    import xarray as xr

    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.params import RasterParams
    from starcenter.cubes.schema import EXPOSURE_BLOCK

    st.init_store(path, "starcenter_benchmark", "synthetic")
    st.write_dataset(path, schema.EXPOSURES, xr.Dataset(
        coords={schema.CHIP: np.array(["WF3"], dtype=object)}, attrs={"filter": "F555W", "source": "simulation"}))
    rng = np.random.default_rng(0)
    r = rng.random((n_exposures, 1, n_stars, size, size)).astype(np.float32)
    r /= r.sum(axis=(-1, -2), keepdims=True)
    t = rng.uniform(2.5, 3.5, (n_exposures, 1, n_stars, 2))
    blk = (EXPOSURE_BLOCK, 1, n_stars)
    ds = xr.Dataset(
        {"raster": (("exposure", "chip", "star", "ry", "rx"), da.from_array(r, chunks=blk + (size, size))),
         "target": (("exposure", "chip", "star", "axis"), da.from_array(t, chunks=blk + (2,))),
         "corner": (("exposure", "chip", "star", "axis"), da.zeros(t.shape, chunks=blk + (2,), dtype=np.int32)),
         "mask": (("exposure", "chip", "star"), da.ones(t.shape[:3], chunks=blk, dtype=bool)),
         "selected": (("chip", "star"), np.ones((1, n_stars), bool))},
        coords={"chip": np.array(["WF3"], dtype=object),
                "star_key": (("chip", "star"), np.arange(n_stars)[None].astype(np.int64))},
        attrs={"size": size, "params": RasterParams(size=size).to_json()})
    with st._quiet_consolidation():
        ds.to_zarr(str(path), group=schema.RASTERS, mode="w", consolidated=False)
    st.consolidate(path)


def bench_bridge(store, chip: str, steps: int = 300, batch: int = 256) -> dict:
    import keras
    import tensorflow as tf

    from starcenter.model.architectures import build
    from starcenter.model.bridge import RasterSource, dataset

    src = RasterSource(store, chip, "train")
    x, y = src.to_numpy()
    model = build("v1", src.size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
    mem = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(20_000, seed=0).batch(batch).repeat().prefetch(tf.data.AUTOTUNE)
    zds = dataset(src, batch, repeat=True)
    model.fit(mem, steps_per_epoch=20, epochs=1, verbose=0)  # warm-up / tracing
    out = {}
    for name, ds in (("in-memory numpy", mem), ("Zarr bridge", zds)):
        t0 = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        out[name] = steps * batch / (time.perf_counter() - t0)
    ratio = out["Zarr bridge"] / out["in-memory numpy"]
    print(f"training samples/s, VGG6 V1, batch {batch}, {steps} steps: in-memory "
          f"{out['in-memory numpy']:.0f}, Zarr bridge {out['Zarr bridge']:.0f} -> {ratio:.2f}x (target >= 0.9x)")
    return {**out, "ratio": ratio}


def bench_predict(store, chip: str, tmp: Path) -> float:
    import dask

    from starcenter.model.architectures import build
    from starcenter.model.predict import predict
    from starcenter.model.train import metadata_path

    src_size = 6
    m = build("v2", src_size)
    path = tmp / "v2.keras"
    m.save(path)
    import json

    metadata_path(path).write_text(json.dumps({"chip": chip, "raster_size": src_size, "filter": None}))
    import xarray as xr

    n = int(xr.open_zarr(store, group="rasters")["mask"].sel(chip=chip).sum())
    with dask.config.set(scheduler="threads", num_workers=1):
        predict(store, path, "bench-warmup", chip=chip, force=True, progress=False)
        t0 = time.perf_counter()
        predict(store, path, "bench", chip=chip, force=True, progress=False)
        rate = n / (time.perf_counter() - t0)
    print(f"predict VGG6 V2: {n} rasters, {rate:.0f} stars/s (target >= 5,000)")
    return rate


def run(store=None, chip="WF3"):
    tmp = Path(tempfile.mkdtemp(prefix="bench-model-"))
    try:
        if store is None:
            store = tmp / "synthetic.zarr"
            synthetic_store(store)
            print(f"synthetic rasters cube: {store}")
        b = bench_bridge(store, chip)
        p = bench_predict(store, chip, tmp)
        return b, p
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_bench_model():
    run()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--chip", default="WF3")
    a = ap.parse_args()
    run(a.store, a.chip)
