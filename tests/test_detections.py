"""The detections stage on a tiny simulated store: schema, precision against truth, resume."""

import shutil

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from cubes.detections import DetectParams, detect
from cubes.errors import BadArgumentError, StoreMismatchError
from evaluation.truth import match_to_truth

from .conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("derived"), "true", catalog=False)


def test_group_schema(store):
    d = xr.open_zarr(store, group="detections")
    assert d["x"].dims == ("exposure", "chip", "det")
    assert d.sizes["det"] == int(d["count"].max())
    for k in range(d.sizes["chip"]):
        n = int(d["count"].isel(exposure=0, chip=k))
        x = d["x"].isel(exposure=0, chip=k).values
        assert np.isfinite(x[:n]).all() and np.isnan(x[n:]).all()
        q = d["q"].isel(exposure=0, chip=k).values[:n]
        sat = d["saturated"].isel(exposure=0, chip=k).values[:n]
        assert np.all(q[sat] == 0) and np.all(q[~sat] > 0)
    assert d.attrs["complete"] == 1


@pytest.mark.parametrize("chip", ["PC1", "WF3"])
def test_true_epsf_centres_match_truth(store, chip):
    m = match_to_truth(store, 1, chip)
    good = m.well_measured() & (m.q < 0.1)
    assert good.sum() > 50
    err = np.hypot(m.dx[good], m.dy[good]) * 1e3
    assert np.median(err) < 15  # mpix; crowding sets the tail, the core is near the bound


def test_rerun_skips_and_other_parameters_are_refused(store):
    with dask.config.set(scheduler="synchronous"):
        again = detect(store, DetectParams("true"), progress=False)
        assert again["written"] == 0 and again["skipped"] == 6
        with pytest.raises(StoreMismatchError, match="--overwrite"):
            detect(store, DetectParams("library"), progress=False)


def test_resume_after_interruption(tiny_store, tmp_path):
    path = tmp_path / "r.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        detect(path, DetectParams("library"), progress=False)
        root = zarr.open_group(str(path), mode="r")
        before = root["detections/x"][...]
        # simulate a run killed before chunk (2, 1) finished: its marker is unset, data garbage
        g = zarr.open_group(str(path), mode="r+")
        g["detections/done"][2, 1] = 0
        g["detections/x"][2, 1] = np.zeros(g["detections/x"].shape[2])
        out = detect(path, DetectParams("library"), progress=False)
    assert out["written"] == 1
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["detections/x"][...], before)


def test_store_without_exposures_is_a_clear_error(tmp_path):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(StoreMismatchError, match="no 'exposures' group"):
        detect(tmp_path / "empty.zarr", progress=False)


def test_bad_parameters():
    with pytest.raises(BadArgumentError, match="--psf"):
        DetectParams("tinytim")


def test_empirical_epsf_is_built_and_stored(tiny_store, tmp_path):
    path = tmp_path / "e.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        detect(path, DetectParams("empirical"), progress=False)
    psf = xr.open_zarr(path, group="psf")
    emp = psf["empirical"].sel(chip="WF3").values
    assert emp.shape == psf["library"].sel(chip="WF3").shape and np.isfinite(emp).all()
    assert 0.1 < emp.max() < 0.6
    assert int(xr.open_zarr(path, group="detections")["count"].min()) > 1000
