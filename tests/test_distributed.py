"""Out-of-core and distributed behaviour (issue #8): fsspec stores, a real LocalCluster, and
kill -9 of a worker and of the driver in the middle of a stage, each compared bit for bit with
an undisturbed run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    from starcenter.cubes.sim.simulate import make_config

    return make_config("demo", n_exposures=6, chips=("WF3",), seed=11)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, config):
    """Simulated and detected with the synchronous scheduler, nothing interrupted."""
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.sim.simulate import simulate
    from starcenter.cubes.stages.detections import detect

    path = tmp_path_factory.mktemp("undisturbed") / "u.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, config, progress=False)
        detect(path, DetectParams("library"), progress=False)
    return path


def assert_same_group(a, b, group):
    da_, db = xr.open_zarr(str(a), group=group), xr.open_zarr(str(b), group=group)
    assert set(da_.variables) == set(db.variables)
    for v in da_.variables:
        np.testing.assert_array_equal(da_[v].values, db[v].values, err_msg=f"{group}/{v}")


def done_count(store, group) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(store), mode="r")[f"{group}/done"][...]).sum())
    except (KeyError, FileNotFoundError):
        return 0


def test_whole_chain_on_an_fsspec_memory_store(undisturbed, config, tmp_path):
    """simulate -> detect -> catalog -> train/predict -> evaluate on memory://, same results as
    on a local path."""
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.sim.simulate import simulate
    from starcenter.cubes.stages.detections import detect
    from starcenter.evaluation.report import evaluate
    from starcenter.model.predict import predict
    from starcenter.model.train import train

    mem = f"memory://starcenter-test-{os.getpid()}/m.zarr"
    local = tmp_path / "local.zarr"
    shutil.copytree(undisturbed, local)
    with dask.config.set(scheduler="synchronous"):
        simulate(mem, config, progress=False)
        detect(mem, DetectParams("library"), progress=False)
        assert_same_group(mem, undisturbed, "exposures")
        assert_same_group(mem, undisturbed, "detections")
        run_catalog(mem, progress=False)
        run_catalog(local, progress=False)
        assert_same_group(mem, local, "rasters")
        train(mem, "WF3", "v1", "fast", epochs=1, out=tmp_path / "m.keras", target="exact", verbose=0)
        predict(mem, tmp_path / "m.keras", "vgg6", chip="WF3", progress=False)
        metrics = evaluate(mem, tmp_path / "report")
    assert "vgg6" in metrics["methods"] and (tmp_path / "report" / "report.md").exists()
    assert not Path("memory:").exists()  # nothing went to a local folder named after the URL


def test_worker_killed_mid_stage_on_a_local_cluster(undisturbed, config, tmp_path):
    """simulate and detect on a real LocalCluster (2 worker processes); a worker is killed with
    SIGKILL while detect runs: the stage completes and equals the undisturbed run bit for bit."""
    from distributed import Client, LocalCluster

    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.sim.simulate import simulate
    from starcenter.cubes.stages.detections import detect

    store = tmp_path / "c.zarr"
    total = config.n_exposures
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        simulate(store, config, progress=False)
        assert_same_group(store, undisturbed, "exposures")
        result, killed = {}, {}
        th = threading.Thread(target=lambda: result.update(detect(store, DetectParams("library"),
                                                                  progress=False)))
        th.start()
        t0 = time.time()
        while th.is_alive() and time.time() - t0 < 120:
            n = done_count(store, "detections")
            if 1 <= n < total:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed["at"] = n
                break
            time.sleep(0.02)
        th.join(300)
    assert killed, "the stage finished before a worker could be killed mid-stage"
    assert result["written"] == total and done_count(store, "detections") == total
    assert xr.open_zarr(str(store), group="detections").attrs["complete"] == 1
    assert_same_group(store, undisturbed, "detections")


def test_driver_killed_mid_stage_resumes_to_the_same_store(undisturbed, tmp_path):
    """`starcenter detect` killed with SIGKILL mid-stage: the store is not marked complete, the
    rerun skips the finished chunks, and the final store equals the undisturbed run."""
    store = tmp_path / "d.zarr"
    shutil.copytree(undisturbed, store)
    shutil.rmtree(store / "detections")
    zarr.consolidate_metadata(str(store))
    cmd = [sys.executable, "-m", "starcenter", "detect", str(store), "--scheduler",
           "synchronous", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    total = xr.open_zarr(str(undisturbed), group="detections")["done"].size
    t0, n = time.time(), 0
    while proc.poll() is None and time.time() - t0 < 180:
        n = done_count(store, "detections")
        if n >= 1:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert 1 <= n < total, f"killed after {n} of {total} chunks"
    assert xr.open_zarr(str(store), group="detections").attrs["complete"] == 0
    assert (tmp_path / "d.zarr.lock").exists()  # left by the killed driver: stale, taken over
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    skipped = int(r.stdout.split("chunks written, ")[1].split(" already done")[0])
    assert skipped >= n
    assert_same_group(store, undisturbed, "detections")


def test_lock_on_an_fsspec_store_refuses_a_second_writer():
    """A second writer (here another thread) is refused; the holder's own nested stages re-enter."""
    import threading

    from starcenter.cubes.errors import StoreMismatchError
    from starcenter.cubes.store import filesystem, locked

    url = f"memory://starcenter-lock-{os.getpid()}/s.zarr"
    errors = []

    def second_writer():
        try:
            with locked(url, "catalog"):
                pass
        except StoreMismatchError as err:
            errors.append(str(err))

    with locked(url, "detect"):
        with locked(url, "detect"):  # re-entry by the holder (a pipeline run and its stage)
            pass
        t = threading.Thread(target=second_writer)
        t.start()
        t.join()
    assert len(errors) == 1 and "is being written by `starcenter detect`" in errors[0]
    fs, p = filesystem(url)
    assert not fs.exists(p + ".lock")  # released
    with locked(url, "catalog"):  # and can be taken again
        pass
