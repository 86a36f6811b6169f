"""benchmarks/generalist_scaling.py: the export / run / assemble round trip that lets a generalist
train wherever compute is (an H100 trained the shipped WF2 / WF4 F555W members)."""

import json

import numpy as np

from starcenter.model.train import RECIPES
from tests.helpers import benchmark

S = benchmark("generalist_scaling")


def test_its_recipe_and_inputs_are_the_generalists():
    """The script keeps its own copies (the GPU host has no zarr, which model.train and
    starcenter.generalist import)."""
    from starcenter import generalist as G

    from starcenter.model.bridge import skip_indices

    assert S.FEATURES == G.FEATURES and S.SKIP == skip_indices(G.FEATURES)
    fast = RECIPES["fast"]
    assert (S.FAST.learning_rate, S.FAST.batch_size) == (fast.learning_rate, fast.batch_size)
    assert fast.schedule == "cosine" and fast.restore_best


def _npz(path, n_parts=2, n=96, seed=0):
    """An export's layout with rasters whose centre is their target and a classical centre 0.05 px
    off it (a learnable toy)."""
    rng = np.random.default_rng(seed)
    arrays, parts = {}, []
    yy, xx = np.mgrid[0:6, 0:6]
    for k in range(n_parts):
        for subset in ("train", "validation"):
            c = rng.uniform(2, 3, (n, 2)).astype(np.float32)
            r = np.exp(-((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2) / 1.5)
            r = (r / r.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
            arrays[f"x_{subset}_{k}"] = r
            f = rng.uniform(-1, 1, (n, len(S.FEATURES))).astype(np.float32)
            f[:, list(S.SKIP)] = c - 3 + rng.normal(0, 0.05, (n, 2))  # a classical centre, px from the middle
            arrays[f"f_{subset}_{k}"] = f
            arrays[f"y_{subset}_{k}"] = np.concatenate([c, np.zeros((n, 1), np.float32)], axis=1)
        parts.append({"store": f"toy-{k}", "split_seed": k, "n_train": n, "n_validation": n,
                      "source": "SIMULATION"})
    np.savez(path, label=json.dumps({"chip": "WF3", "features": list(S.FEATURES), "parts": parts}), **arrays)
    return path


def test_a_variant_trains_on_the_parts_it_names_and_comes_back_as_a_package_model(tmp_path):
    from starcenter.model.predict import forward, load_model

    npz = _npz(tmp_path / "toy.npz")
    res = S.train_variant(str(npz), str(tmp_path / "out"), "both:v1:0+1:3", budget_s=None, seed=0)
    assert res["n_train"] == 192 and res["epochs"] == 3
    assert [p["store"] for p in res["parts"]] == ["toy-0", "toy-1"]
    assert res["n_validation"] == 192  # every part's validation stars
    one = S.train_variant(str(npz), str(tmp_path / "out"), "one:v1:1:2", budget_s=None, seed=0)
    assert one["n_train"] == 96 and [p["store"] for p in one["parts"]] == ["toy-1"]
    path = S.assemble(str(tmp_path / "out"), "both")
    d = np.load(npz)
    x = (d["x_validation_0"][..., None], d["f_validation_0"])
    out = forward(load_model(str(path)), x)
    assert out.shape == (96, 6) and np.all(np.isfinite(out))
    # the rebuilt file holds the trained weights: the run's best validation MAE, recomputed
    mae = np.mean(np.abs(out[:, :2] - d["y_validation_0"][:, :2]))
    assert mae < 0.5  # px; the untrained network starts at the raster centre, ~0.5 px off
