"""The detections stage on a tiny simulated store: schema, precision against truth, resume."""

import shutil

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.params import DetectParams
from starcenter.cubes.stages.detections import detect
from starcenter.evaluation.truth import match_to_truth

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
    """The empirical ePSF (3 exposures, a 5 um focus error against the library) is centred and
    close to the epoch's true ePSF: L1 distance of 7x7 pixel stamps over five pixel phases
    < 0.2 of the flux on both chips, and on WF3 (measured: 0.12-0.15) closer than the library
    (0.18-0.20). On PC1 it comes out sharper than the truth (peak 0.31 vs 0.27, L1 0.15-0.17,
    worse than the library's 0.10): the ePSF / pixel-phase degeneracy of few exposures, which
    the catalog ePSF breaks."""
    from starcenter.cubes.classical.epsf import EffectivePSF

    path = tmp_path / "e.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        detect(path, DetectParams("empirical"), progress=False)
    psf = xr.open_zarr(path, group="psf")
    phases = [(0, 0), (0.25, 0), (0.5, 0.5), (0, 0.25), (-0.25, 0.4)]
    k = np.arange(-3, 4)
    for chip in ("PC1", "WF3"):
        emp = psf["empirical"].sel(chip=chip).values
        assert emp.shape == psf["library"].sel(chip=chip).shape and np.isfinite(emp).all()
        emp = EffectivePSF(emp, 4)
        true = EffectivePSF(psf["true"].sel(chip=chip).isel(focus=0, field_y=0, field_x=0).values, 4)
        lib = EffectivePSF(psf["library"].sel(chip=chip).values, 4)
        stamp = emp.pixel_stamp(0, 0, 3)
        assert abs((stamp.sum(axis=0) * k).sum() / stamp.sum()) < 0.02
        assert abs((stamp.sum(axis=1) * k).sum() / stamp.sum()) < 0.02

        def l1(e):
            return np.array([np.abs(e.pixel_stamp(*ph, 3) - true.pixel_stamp(*ph, 3)).sum()
                             / true.pixel_stamp(*ph, 3).sum() for ph in phases])

        assert l1(emp).max() < 0.2, (chip, l1(emp))
        if chip == "WF3":
            assert l1(emp).mean() < 0.85 * l1(lib).mean(), (l1(emp), l1(lib))
    assert int(xr.open_zarr(path, group="detections")["count"].min()) > 1000
