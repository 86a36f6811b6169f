"""The classical branch's second iteration (#5): the Anderson & King ePSF learnt at the average
catalog's positions, neighbour subtraction, the catalog-weighted projection and the
stacked-residual cut, each against exact simulated truth."""

import dask
import numpy as np
import pytest
import xarray as xr

from starcenter.cubes.classical.empirical import catalog_epsf
from starcenter.cubes.classical.psffit import cut_boxes, fit_stars
from starcenter.cubes.params import DetectParams
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.cubes.stages.detections import detect_chunk
from starcenter.evaluation.truth import phase_profile, pixel_phase

from .helpers import GAIN, READ_NOISE, SKY_E, star_grid


@pytest.fixture(scope="module")
def wf3():
    # true focus 5 um off the library's, as the simulated data sets
    return get_epsf(PSFParams("WF3", "F555W", 5.0)), get_epsf(PSFParams("WF3", "F555W", 0.0))


def _stamp_distance(a, b):
    """Mean over sub-pixel phases of sum |a - b| over the 5x5 fit box (flux fraction)."""
    ph = (-0.5, -0.25, 0.0, 0.25)
    return np.mean([np.abs(a.pixel_stamp(u, v, 2) - b.pixel_stamp(u, v, 2)).sum() for u in ph for v in ph])


def test_catalog_epsf_learns_the_true_epsf_from_known_positions(wf3):
    true, library = wf3
    stamps, xs, ys = [], [], []
    for seed in range(3):  # three "exposures" of 400 stars at random phases
        img, x0, y0, *_ = star_grid(true, n=20, seed=seed)
        ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
        stamps.append(cut_boxes(img, ix, iy, 3)[0])
        xs.append(x0 - ix)
        ys.append(y0 - iy)
    learnt = catalog_epsf(np.concatenate(stamps), np.concatenate(xs), np.concatenate(ys), library,
                          GAIN, READ_NOISE, iterations=10)
    assert _stamp_distance(learnt, true) < 0.25 * _stamp_distance(library, true)
    # centring a fresh grid with it: no pixel-phase bias left (the library's is > 15 mpix)
    img, x0, y0, *_ = star_grid(true, n=20, seed=9)
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    for epsf, lo, hi in ((library, 15.0, np.inf), (learnt, 0.0, 4.0)):
        r = fit_stars(img, ix, iy, epsf, GAIN, READ_NOISE)
        _, mean, _ = phase_profile(pixel_phase(x0), (r.x - x0) * 1e3)
        assert lo <= np.ptp(mean) < hi, (epsf, mean)


def test_neighbour_subtraction_removes_a_detected_neighbours_pull(wf3):
    """Pairs 3.5 px apart (secondary 0.4 x the primary's flux): refitting on the image minus
    the neighbours' models more than halves the primaries' mean error."""
    from starcenter.cubes.sim.detector import render_stars

    true, _ = wf3
    rng = np.random.default_rng(4)
    g = np.arange(12) * 24 + 14
    X, Y = np.meshgrid(g, g)
    xp, yp = X.ravel() + rng.uniform(-0.5, 0.5, X.size), Y.ravel() + rng.uniform(-0.5, 0.5, X.size)
    ang = rng.uniform(0, 2 * np.pi, X.size)
    xs, ys = xp + 3.5 * np.cos(ang), yp + 3.5 * np.sin(ang)
    fp = np.full(X.size, 5e4)
    expected = render_stars((300, 300), np.r_[xp, xs], np.r_[yp, ys], np.r_[fp, 0.4 * fp], true) + SKY_E
    img = (rng.poisson(expected) + rng.normal(0, READ_NOISE, expected.shape)) / GAIN
    err = {}
    for passes in (0, 2):
        det = detect_chunk(img, None, true, GAIN, READ_NOISE, DetectParams("true", neighbour_passes=passes))
        d = np.hypot(det["x"][None, :] - xp[:, None], det["y"][None, :] - yp[:, None])
        j = d.argmin(axis=1)
        assert np.all(d[np.arange(xp.size), j] < 0.5)  # every primary found
        err[passes] = np.hypot(det["x"][j] - xp, det["y"][j] - yp) * 1e3
    assert np.median(err[2]) < 0.5 * np.median(err[0]), (np.median(err[0]), np.median(err[2]))


def test_projection_weighted_by_catalog_scatter_ignores_noisy_stars():
    from starcenter.cubes.classical.transforms import apply, project_catalog

    rng = np.random.default_rng(1)
    n, ne = 300, 6
    mean = rng.uniform(270, 530, (n, 2))
    # half the stars crowded (12 mpix scatter): too close to the clean ones' 3 mpix for
    # 3-sigma culling to separate them; the catalog rms weights do
    sigma = np.where(rng.uniform(size=n) < 0.5, 0.012, 0.003)
    rms = np.repeat(sigma[:, None], 2, axis=1)
    cx = np.array([1.5, 399.5, 0.3, 1e-3, 0, 0, 2e-4, 0, 0, 0])
    cy = np.array([-0.7, -0.2, 399.4, 0, 1e-3, 0, 0, 0, 0, 1e-4])
    truth = np.stack(apply(cx, cy, mean[:, 0], mean[:, 1]), axis=-1)
    native = truth[None] + rng.normal(0, 1, (ne, n, 2)) * sigma[None, :, None]
    good = np.ones(n, bool)
    got, coef = project_catalog(mean, rms, native, good, np.ones(ne, bool))
    err = (got - truth[None]) * 1e3
    unweighted, _ = project_catalog(mean, np.ones_like(rms), native, good, np.ones(ne, bool))
    err_u = (unweighted - truth[None]) * 1e3
    assert np.sqrt(np.mean(err**2)) < 1.0  # mpix: ~3 mpix * sqrt(10 terms / 150 clean stars)
    assert np.sqrt(np.mean(err**2)) < 0.6 * np.sqrt(np.mean(err_u**2))
    assert np.all(np.isfinite(coef))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_second_iteration_with_the_catalog_epsf_brings_the_truth_to_a_few_mpix(tmp_path):
    """The whole classical second iteration on a 24-exposure PC1 simulation (focus 5 um off the
    library): library detections -> catalog -> catalog ePSF -> detections with it and
    neighbour subtraction -> catalog with the stacked-residual cut. The catalog truth must move
    from the library's pixel-phase-biased tens of mpix to a few mpix of the exact truth."""
    from starcenter.cubes.classical.epsf import EffectivePSF
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.sim.simulate import make_config, simulate
    from starcenter.cubes.stages.detections import detect
    from starcenter.cubes.stages.psf import build_catalog_psfs
    from starcenter.evaluation.metrics import catalog_vs_exact

    path = tmp_path / "iter.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, make_config("demo", n_exposures=24, chips=("PC1",), seed=3), progress=False)
        detect(path, DetectParams("library"), progress=False)
        run_catalog(path, progress=False)
        before = catalog_vs_exact(path)["PC1"]
        build_catalog_psfs(path, progress=False)
        psf = xr.open_zarr(path, group="psf")
        true = EffectivePSF(psf["true"].sel(chip="PC1").values[0, 0, 0])
        library = EffectivePSF(psf["library"].sel(chip="PC1").values)
        learnt = EffectivePSF(psf["catalog"].sel(chip="PC1").values)
        assert _stamp_distance(learnt, true) < 0.25 * _stamp_distance(library, true)
        detect(path, DetectParams("catalog", neighbour_passes=2), progress=False, overwrite=True)
        run_catalog(path, progress=False)
        after = catalog_vs_exact(path)["PC1"]
    ras = xr.open_zarr(path, group="rasters")
    assert np.isfinite(ras["stack_residual"].values).sum() > 50  # the cut was measured
    assert after["n_rasters"] > 500
    for a in range(2):
        assert after["rms_mpix"][a] < 4.0, (before, after)
        assert after["rms_mpix"][a] < 0.3 * before["rms_mpix"][a], (before, after)


def test_catalog_epsf_without_a_catalog_is_a_clear_error_and_harms_nothing(tiny_store, tmp_path):
    from starcenter.cubes.errors import StoreMismatchError
    from starcenter.cubes.stages.detections import detect

    from .conftest import derive_store

    path = derive_store(tiny_store, tmp_path, "library", catalog=False)
    before = xr.open_zarr(path, group="detections")["x"].values
    with pytest.raises(StoreMismatchError, match="run `starcenter catalog` first"):
        detect(path, DetectParams("catalog"), progress=False, overwrite=True)
    after = xr.open_zarr(path, group="detections")
    assert after.attrs["params"] == DetectParams("library").to_json()
    np.testing.assert_array_equal(after["x"].values, before)
