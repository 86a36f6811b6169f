"""Pixel-phase self-calibration (cubes.classical.phase, the phase stage): a known pixel-phase bias
is removed against exact truth, unbiased centres are left alone, the fractional-pixel check of
corrected centres is cross-validated, bad input is refused before anything is written."""

import dask
import numpy as np
import pytest
import xarray as xr
from scipy.stats import chisquare

from starcenter.cubes import pipeline, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.phase import cross_validated, fractional, self_calibrated
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError

from .conftest import derive_store

#: the bias put in: A sin(2 pi phase), px (100 mpix peak to peak, as the REAL WF chips' size)
AMPLITUDE = 0.05


def biased(true: np.ndarray, rng, amplitude: float = AMPLITUDE, noise: float = 0.005) -> np.ndarray:
    """Centres with a pixel-phase bias (a sine of the true phase) and Gaussian noise, px."""
    return true + amplitude * np.sin(2 * np.pi * fractional(true)) + rng.normal(0, noise, true.shape)


def p_uniform(x: np.ndarray) -> float:
    return float(chisquare(np.histogram(fractional(x), 10, (-0.5, 0.5))[0]).pvalue)


def test_a_known_bias_is_removed_and_unbiased_centres_are_left_alone():
    rng = np.random.default_rng(3)
    true = rng.uniform(0, 800, (2, 3000, 2))
    meas = biased(true, rng)
    fixed, sigma = self_calibrated(meas, order=0)  # the bias is the same over the chip
    before, after = (np.sqrt(np.mean((m - true) ** 2)) * 1e3 for m in (meas, fixed))
    # mpix: the bias; then the noise (5.5 through the map) and the fit's error (4.4, one draw per
    # exposure and axis): about 7
    assert before > 30 and after < 11, (before, after)
    assert np.all((sigma > 0.001) & (sigma < 0.01))  # px: its statistical uncertainty, N = 3000
    clean = true + rng.normal(0, 0.005, true.shape)
    for order in (0, 1):
        same, zero = self_calibrated(clean, order=order)
        assert np.array_equal(same, clean) and not zero.any()  # no harmonic significant: untouched


def test_a_bias_that_changes_across_the_chip_needs_order_1():
    """The bias grows linearly from the chip's left edge (-A) to its right edge (+A): a constant
    correction (order 0) averages it away, a linear one (order 1) removes it."""
    rng = np.random.default_rng(4)
    true = rng.uniform(0, 800, (2, 3000, 2))
    slope = true[..., :1] / 400 - 1
    meas = true + slope * AMPLITUDE * np.sin(2 * np.pi * fractional(true)) + rng.normal(0, 0.005, true.shape)
    err = {o: np.sqrt(np.mean((self_calibrated(meas, order=o)[0] - true) ** 2)) * 1e3 for o in (0, 1)}
    before = np.sqrt(np.mean((meas - true) ** 2)) * 1e3
    assert before > 18 and err[0] > 0.9 * before and err[1] < 11, (before, err)
    pooled = np.sqrt(np.mean((self_calibrated(meas, order=1, pool="store")[0] - true) ** 2)) * 1e3
    assert pooled < err[1], (pooled, err)  # both exposures' stars: less noise


def test_the_check_of_corrected_centres_is_cross_validated():
    """Corrected with their own coefficients, phases are uniform whatever the correction is worth;
    corrected with the other half's, they are uniform only if the bias is real and common."""
    rng = np.random.default_rng(5)
    true = rng.uniform(0, 800, (1, 3000, 2))
    meas = biased(true, rng)
    cv = cross_validated(meas)
    assert p_uniform(meas[..., 0]) < 1e-6 and p_uniform(cv[..., 0]) > 0.01
    even = np.arange(3000) % 2 == 0
    by_even = self_calibrated(meas, fit_on=np.broadcast_to(even, (1, 3000)))[0]  # odd stars' correction
    assert np.array_equal(cv[:, ~even], by_even[:, ~even])
    assert not np.array_equal(cv[:, even], by_even[:, even])


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    """The tiny store with rasters and centers/oracle: exact truth with a pixel-phase bias."""
    path = derive_store(tiny_store, tmp_path_factory.mktemp("phase"), "true", catalog=True)
    ras = xr.open_zarr(path, group="rasters")
    exact = (ras["corner"] + ras["target_exact"]).values
    xy = np.where(ras["mask"].values[..., None], biased(exact, np.random.default_rng(0), 0.08), np.nan)
    st.write_dataset(path, schema.centers_group("oracle"), xr.Dataset(
        {"xy": ((schema.EXPOSURE, schema.CHIP, schema.STAR, "axis"), xy)},
        coords={schema.CHIP: ras[schema.CHIP].values}))
    return path


def test_the_stage_corrects_a_store_resumes_and_is_checked_cross_validated(store):
    from starcenter.evaluation.metrics import fractional_histograms

    with dask.config.set(scheduler="synchronous"):
        out = pipeline.run_stage("phase", store, None, False, source="oracle", pool="store")
        again = pipeline.run_stage("phase", store, None, False, source="oracle", pool="store")
    assert out.attrs["method"] == "oracle-phase" and again.attrs["complete"] == 1
    ras = xr.open_zarr(store, group="rasters")
    exact = (ras["corner"] + ras["target_exact"]).values
    src = xr.open_zarr(store, group="centers/oracle")["xy"].values
    for c in range(exact.shape[1]):
        before, after = (float(np.sqrt(np.nanmean((m[:, c] - exact[:, c]) ** 2))) * 1e3
                         for m in (src, out["xy"].values))
        assert after < 0.5 * before, (c, before, after)
        np.testing.assert_array_equal(out["xy"].values[:, c], self_calibrated(src[:, c], pool="store")[0])
    assert (out["phase_cos"].values[..., 0] != 0).all()  # the first harmonic kept, every chip and axis
    hist = fractional_histograms(store, "oracle-phase")
    for c, chip in enumerate(str(v) for v in ras[schema.CHIP].values):
        cv = cross_validated(src[:, c], pool="store")
        ok = np.all(np.isfinite(cv), axis=-1)
        assert hist[chip]["hist_x"] == np.histogram(fractional(cv[ok][:, 0]), 10, (-0.5, 0.5))[0].tolist()


def test_an_interrupted_run_redoes_only_what_is_missing(store):
    """Resume: with one chip's chunk marked undone (as a crash leaves it), a rerun writes that chunk
    again, the same bytes, and leaves the other chip's as they were."""
    import zarr

    with dask.config.set(scheduler="synchronous"):
        first = pipeline.run_stage("phase", store, None, False, source="oracle", name="resume").load()
        grp = zarr.open_group(str(store), mode="r+")["centers/resume"]
        grp["done"][:, 1] = 0
        grp["xy"][:, 1] = np.nan
        grp["xy"][:, 0] = 123.0  # a finished chunk is not rewritten
        again = pipeline.run_stage("phase", store, None, False, source="oracle", name="resume")
    np.testing.assert_array_equal(again["xy"].values[:, 1], first["xy"].values[:, 1])
    assert np.all(again["xy"].values[:, 0] == 123.0)


def test_the_command_line(store, capsys):
    from starcenter.cli import main

    assert main(["phase", str(store), "--from", "oracle", "--name", "cli", "--pool", "store",
                 "--scheduler", "synchronous", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "centers/cli written from oracle" in text and "corrected in 3 / 3 exposures" in text
    assert xr.open_zarr(store, group="centers/cli").attrs["phase_source"] == "oracle"
    with dask.config.set(scheduler="synchronous"):  # the same name from another source: redone
        again = pipeline.run_stage("phase", store, None, False, source="classical", name="cli")
    ras = xr.open_zarr(store, group="rasters")
    assert again.attrs["phase_source"] == "classical"
    np.testing.assert_array_equal(np.isfinite(again["xy"].values), np.isfinite(ras["prelim"].where(
        ras["mask"]).values))


def test_bad_input_is_refused_before_anything_is_written(store):
    from starcenter.cli import main

    before = sorted(p.name for p in (store / "centers").iterdir())
    with pytest.raises(StoreMismatchError, match="centers/missing"):
        pipeline.run_stage("phase", store, None, False, source="missing")
    with pytest.raises(BadArgumentError, match="name of their own"):
        pipeline.run_stage("phase", store, None, False, source="oracle", name="oracle")
    with pytest.raises(StoreMismatchError, match="another method's centres"):  # never overwrites a network's
        pipeline.run_stage("phase", store, None, False, source="classical", name="oracle")
    with pytest.raises(BadArgumentError, match="pool"):
        pipeline.run_stage("phase", store, None, False, source="oracle", pool="chip")
    with pytest.raises(SystemExit):  # argparse: --order is 0 to 3
        main(["phase", str(store), "--from", "oracle", "--order", "9"])
    assert sorted(p.name for p in (store / "centers").iterdir()) == before


def test_first_harmonic_reads_uniform_and_edge_bunched_phases():
    from starcenter.cubes.classical.phase import first_harmonic

    rng = np.random.default_rng(3)
    assert abs(first_harmonic(rng.uniform(0, 800, 20000))) < 0.03  # uniform: 0 within its noise
    edges = np.round(rng.uniform(0, 800, 20000)) + 0.5 + rng.normal(0, 0.1, 20000)
    assert first_harmonic(edges) < -1.5  # at the pixel edges: cos(2 pi phase) = -1
