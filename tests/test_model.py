"""VGG6 (paper Table 1), the tf.data bridge, training with resume, prediction with checks."""

import json
import os
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

from .conftest import derive_store

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.mark.parametrize("arch, total, trainable", [("v1", 34_418, 34_354), ("v2", 214_754, 214_626)])
def test_vgg6_parameter_counts_match_table_1(arch, total, trainable):
    from starcenter.model.architectures import build

    m = build(arch, 6)
    assert m.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == trainable
    assert m.output_shape == (None, 2)


def test_unknown_architecture():
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.architectures import build

    with pytest.raises(BadArgumentError, match="vgg19.*resnet"):
        build("vgg19")


def test_small_resnet_builds_with_every_option_and_learns_centres():
    """The ResNet of the registry: its parameter count, the shared head's options, and a few
    epochs on synthetic Gaussian stars bring its centre error well below the raster's spread."""
    from starcenter.model.architectures import build
    from starcenter.model.train import RECIPES, compile_model

    assert build("resnet").count_params() == 581_634
    assert build("resnet", 6, n_features=2, uncertainty=True, flux=True).output_shape == (None, 6)
    rng = np.random.default_rng(0)
    xy = rng.uniform(2.5, 3.5, (3000, 2))
    g = np.arange(6)
    r = np.exp(-((g[None, None, :] - xy[:, None, None, 0]) ** 2 + (g[None, :, None] - xy[:, None, None, 1]) ** 2) / 1.2)
    r = (r / r.sum(axis=(1, 2), keepdims=True))[..., None].astype(np.float32)
    import keras

    keras.utils.set_random_seed(0)  # the weights' initialization: the test does not depend on luck
    m = build("resnet")
    compile_model(m, RECIPES["fast"])
    h = m.fit(r, xy.astype(np.float32), batch_size=64, epochs=6, verbose=0, validation_split=0.2)
    # px MAE of the best epoch (the recipe keeps it), from 0.25 for the raster centre; measured
    # 0.054 (seed 0; 0.02-0.09 over seeds 0-2: batch normalization makes single epochs noisy)
    assert min(h.history["val_loss"]) < 0.1


def test_skip_adds_the_classical_centre_to_x_y_and_survives_a_save(tmp_path):
    """With ``skip`` the x, y outputs move one for one with the two skipped features (the
    classical centre), the identity is not trained, it is saved with the weights, and a network
    with one of the pair alone is refused."""
    import keras

    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.architectures import build
    from starcenter.model.bridge import SKIP, skip_indices

    m = build("v2", 6, 3, uncertainty=True, flux=True, skip=(1, 2))
    # Table 1's V2, 4 more outputs, 3 features into the 512 dense units, the fixed 3x6 identity
    assert m.count_params() == 214_754 + 4 * 513 + 3 * 512 + 3 * 6
    assert not m.get_layer("skip").trainable
    rng = np.random.default_rng(1)
    x, f = rng.random((5, 6, 6, 1), np.float32), rng.uniform(-0.5, 0.5, (5, 3)).astype(np.float32)
    out = m.get_layer("fc_out")
    kernel, bias = out.get_weights()
    out.set_weights([np.zeros_like(kernel), bias])  # the network's own part silenced: x, y = bias + skip
    np.testing.assert_allclose(m.predict([x, f], verbose=0)[:, :2], 3 + f[:, 1:], atol=1e-6)
    out.set_weights([kernel, bias])
    m.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.predict([x, f], verbose=0), m.predict([x, f], verbose=0))
    assert skip_indices(("mag", *SKIP)) == (1, 2) and skip_indices(("mag", "focus")) == ()
    with pytest.raises(BadArgumentError, match="go together"):
        skip_indices(("mag", "classical_x"))
    with pytest.raises(BadArgumentError, match="skip takes two"):
        build("v1", 6, 1, skip=(0, 1))


def test_split_is_by_star_deterministic_and_70_10_20():
    from starcenter.model.bridge import star_subset

    keys = np.arange(200_000, dtype=np.int64)
    parts = {s: star_subset(keys, s, seed=3) for s in ("train", "validation", "test")}
    total = sum(p.astype(int) for p in parts.values())
    assert np.all(total == 1)  # every star in exactly one subset
    assert [round(p.mean(), 2) for p in parts.values()] == [0.7, 0.1, 0.2]
    np.testing.assert_array_equal(star_subset(keys, "train", 3), parts["train"])
    np.testing.assert_array_equal(star_subset(keys, "unseen", 3), parts["validation"] | parts["test"])
    assert not np.array_equal(star_subset(keys, "train", 4), parts["train"])


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("derived"), "library", catalog=True)


def test_bridge_streams_every_valid_raster_once_without_leaks(store):
    from starcenter.model.bridge import RasterSource, dataset

    seen = {}
    for subset in ("train", "validation", "test"):
        src = RasterSource(store, "WF3", subset, seed=1)
        x, y = src.to_numpy()
        got = np.concatenate([b[1].numpy() for b in dataset(src, batch_size=64)])
        assert got.shape == y.shape
        np.testing.assert_allclose(np.sort(got[:, 0]), np.sort(y[:, 0]))
        seen[subset] = set(np.flatnonzero(src.stars))
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["validation"])
    ras = xr.open_zarr(store, group="rasters")
    k = list(ras.chip.values).index("WF3")
    n_valid = int((ras["mask"].isel(chip=k) & ras["target"].isel(chip=k).notnull().all("axis")).sum())
    assert sum(RasterSource(store, "WF3", s, seed=1).count() for s in seen) == n_valid


def test_classical_features_are_the_detection_in_its_raster(store):
    """``classical_x``, ``classical_y``: the fit each raster was cut around, px from the raster's
    central pixel, inside the central pixel; on a simulation the raster's exact target lies within
    a few hundredths of a pixel of it for well-exposed stars."""
    import zarr

    from starcenter.model.bridge import read_features

    root = zarr.open_group(str(store), mode="r")
    ras = xr.open_zarr(store, group="rasters")
    k = list(ras.chip.values).index("WF3")
    f = read_features(root, slice(None), k, ("classical_x", "classical_y"))
    m = ras["mask"].isel(chip=k).values
    prelim, corner = ras["prelim"].isel(chip=k).values, ras["corner"].isel(chip=k).values
    np.testing.assert_allclose(f[m], prelim[m] - corner[m] - 3)
    assert np.abs(f[m]).max() <= 0.5 + 1e-9  # cut around the rounded fit
    err = ras["target"].isel(chip=k).values[m] - 3 - f[m]
    bright = ras["mag"].isel(chip=k).values[m] < -9  # > ~4e3 DN
    assert bright.sum() > 20 and np.nanmedian(np.abs(err[bright])) < 0.03


def test_train_resume_and_predict(store, tmp_path):
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.predict import predict
    from starcenter.model.train import train

    out = tmp_path / "wf3.keras"
    meta = train(store, "WF3", "v1", "fast", epochs=2, out=out, target="exact", verbose=0)
    assert meta["epochs"] == 2 and meta["chip"] == "WF3" and meta["raster_size"] == 6
    assert json.loads((tmp_path / "wf3.keras.json").read_text())["split_seed"] == 0
    # a finished run leaves no checkpoint: training again starts afresh
    assert not (tmp_path / "wf3.keras.backup").exists()
    with dask.config.set(scheduler="synchronous"):
        c = predict(store, out, "vgg6-v1", progress=False)
        xy = c["xy"].sel(chip="WF3").values
        m = xr.open_zarr(store, group="rasters")["mask"].sel(chip="WF3").values
        assert np.isfinite(xy[m]).all() and np.isnan(xy[~m]).all()
        ras = xr.open_zarr(store, group="rasters").sel(chip="WF3")
        inside = (xy[m] >= ras["corner"].values[m]) & (xy[m] < ras["corner"].values[m] + 6)
        assert inside.mean() > 0.99  # centres land inside their rasters
        with pytest.raises(BadArgumentError, match="trained on WF3"):
            predict(store, out, "wrong", chip="PC1", progress=False)
        predict(store, out, "forced", chip="PC1", force=True, progress=False)


def test_a_model_rewritten_at_the_same_path_is_loaded_again(tmp_path):
    """predict's per-process model cache follows the file: a model trained again at the same
    path is not served from the cache."""
    import keras

    from starcenter.model.predict import load_model

    path = tmp_path / "m.keras"
    for value in (1.0, 2.0):
        m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros",
                                                                    bias_initializer="zeros")])
        m.layers[0].bias.assign([value])
        m.save(path)
        assert float(load_model(str(path)).predict(np.zeros((1, 2)), verbose=0)[0, 0]) == value
    assert load_model(str(path)) is load_model(str(path))  # unchanged file: loaded once


def test_model_files_load_in_safe_mode(store, tmp_path):
    import keras

    from starcenter.model.architectures import build

    m = build("v2")
    m.save(tmp_path / "x.keras")
    keras.models.load_model(tmp_path / "x.keras", safe_mode=True)  # built-in layers only: loads
    lam = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda t: t * 2)])
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="(?i)unsafe|lambda"):
        keras.models.load_model(tmp_path / "lambda.keras", safe_mode=True)


def test_killed_training_resumes_from_its_last_epoch(store, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "k.keras"
    cmd = [sys.executable, "-m", "starcenter", "train", str(store), "--chip", "WF3",
           "--arch", "v1", "--epochs", "400", "--out", str(out), "--target", "exact", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hist = tmp_path / "k.keras.history.csv"
    t0 = time.time()
    while time.time() - t0 < 240:
        if hist.exists() and len(hist.read_text().splitlines()) >= 4:  # header + 3 epochs
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(hist.read_text().splitlines()) - 1
    assert done_before >= 3 and (tmp_path / "k.keras.backup").exists()
    cmd[cmd.index("400")] = str(done_before + 2)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    epochs = [int(line.split(",")[0]) for line in hist.read_text().splitlines()[1:]]
    assert epochs == list(range(done_before + 2))  # continued, not restarted


def test_checkpoint_survives_a_kill_during_its_own_write(tmp_path):
    """A kill while the next epoch's weights are written leaves a torn file and the old state.json:
    the restore must use the last complete checkpoint (keras' in-place BackupAndRestore did not)."""
    import numpy as np

    from starcenter.model.architectures import build
    from starcenter.model.train import EpochCheckpoint

    m = build("v1")
    m.compile(optimizer="adam", loss="mae")
    m.optimizer.build(m.trainable_variables)  # as after a training epoch
    ck = EpochCheckpoint(tmp_path / "m.keras.backup", tmp_path / "m.keras.history.csv")
    ck.save(m, 3, [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(3)])
    saved = [w.copy() for w in m.get_weights()]
    (tmp_path / "m.keras.backup" / "epoch-4.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (tmp_path / "m.keras.backup" / "state.json.tmp").write_text('{"epoch": 4, "wei')
    fresh = build("v1")
    fresh.compile(optimizer="adam", loss="mae")
    done, rows = ck.restore(fresh)
    assert done == 3 and [r["epoch"] for r in rows] == [0, 1, 2]
    assert all(np.array_equal(a, b) for a, b in zip(saved, fresh.get_weights()))
    assert (tmp_path / "m.keras.history.csv").read_text().splitlines()[0] == "epoch,loss"


def test_trainings_side_by_side_are_deterministic(store, tmp_path):
    """The demo's way of using the cores: two trainings at once, one process and one TensorFlow
    thread each; the same job twice gives bit-identical weights."""
    import keras

    from starcenter.model.parallel import train_many

    jobs = [dict(store=store, chip="WF3", arch="v1", recipe="fast", epochs=1, out=tmp_path / f"{k}.keras",
                 target="exact", verbose=0) for k in "ab"]
    done = []
    metas = train_many(jobs, workers=2, progress=done.append)
    assert [m["epochs"] for m in metas] == [1, 1] and len(done) == 2
    wa, wb = (keras.saving.load_model(tmp_path / f"{k}.keras").get_weights() for k in "ab")
    assert all(np.array_equal(a, b) for a, b in zip(wa, wb))


_ORPHAN_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from starcenter.model.parallel import start_watchdog

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    watch = dict(initializer=start_watchdog, initargs=(os.getpid(), 0.2))
    with ProcessPoolExecutor(1, mp_context=ctx, **watch) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 600)
        time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps, as under a container's init, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_a_killed_parent_leaves_no_training_worker_behind(tmp_path):
    """Killing ``starcenter generalist`` (SIGKILL) used to leave train_many's workers training on
    as orphans; each worker now ends itself when its parent is gone."""
    import signal
    import subprocess
    import sys
    import time

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its parent"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
