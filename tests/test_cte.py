"""The simulator's WFPC2 CTE (starcenter.cubes.cte): charge, direction, and the dependences on
the star's charge, the background, the row and the date that WFPC2's published CTE has."""

from pathlib import Path

import numpy as np
import pytest

from starcenter.cubes import cte

from .helpers import benchmark


def _calibration():
    return benchmark("calibrate_cte")


def test_readout_conserves_charge_and_moves_it_up_the_column_only():
    sky = np.full((300, 6), 5.0)
    img = sky.copy()
    img[200:203, 2:4] += [[300.0, 300.0], [900.0, 900.0], [300.0, 300.0]]
    out, out_sky = cte.readout(img, cte.CALIBRATION_MJD), cte.readout(sky, cte.CALIBRATION_MJD)
    assert out.sum() - out_sky.sum() == pytest.approx(img.sum() - sky.sum(), rel=3e-3)  # the express approximation
    np.testing.assert_array_equal(out[:200], out_sky[:200])  # rows read before the star: as without it
    star = out - out_sky
    assert star[200:203, 2:4].sum() < 0.99 * 3000  # the star loses charge (3.5 % at row 200) ...
    assert (star[203:240, 2:4] > 0).all()  # ... into a trail behind it
    np.testing.assert_array_equal(star[:, [0, 1, 4, 5]], 0.0)  # and no other column sees it


def test_uniform_sky_alone_comes_out_flat_once_the_traps_are_filled():
    img = np.full((800, 3), 10.0)
    out = cte.readout(img, cte.CALIBRATION_MJD)
    np.testing.assert_allclose(out[400:], 10.0, rtol=1e-3)


def test_a_faint_star_loses_more_than_a_bright_one_and_sky_shields_it():
    calib = _calibration()
    faint, _ = calib.star_effect(1e3, 3.0, cte.TRAPS_PER_ROW_1999, cte.BETA)
    bright, shift_bright = calib.star_effect(3e4, 3.0, cte.TRAPS_PER_ROW_1999, cte.BETA)
    shielded, _ = calib.star_effect(1e3, 30.0, cte.TRAPS_PER_ROW_1999, cte.BETA)
    low_row, shift_low = calib.star_effect(3e4, 3.0, cte.TRAPS_PER_ROW_1999, cte.BETA, row=100.3)
    on_date, _ = calib.star_effect(1e3, 3.0, None, cte.BETA)  # the trap density of the date
    later, _ = calib.star_effect(1e3, 3.0, None, cte.BETA, mjd=cte.CALIBRATION_MJD + 3 * 365)
    assert faint > 2 * bright > 0
    assert shielded < 0.8 * faint
    assert low_row < 0.25 * bright and 0 < shift_low < 0.25 * shift_bright
    assert on_date == pytest.approx(faint) and later > 1.2 * faint


def test_the_trap_model_follows_dolphins_wfpc2_cte_within_its_calibration():
    calib = _calibration()
    for counts, background in ((1e3, 3.0), (1e4, 10.0), (3e4, 30.0)):
        loss, _ = calib.star_effect(counts, background, cte.TRAPS_PER_ROW_1999, cte.BETA)
        assert loss == pytest.approx(calib.dolphin(counts, background), abs=0.05), (counts, background)


def test_dolphins_formula_vanishes_at_the_readout_and_grows_with_row_and_time():
    assert cte.dolphin_loss_mag(1e3, 5.0, 0.0, 51000.0) == pytest.approx(0.0, abs=1e-12)
    rows = cte.dolphin_loss_mag(1e3, 5.0, np.array([200.0, 800.0]), 51000.0)
    assert 0 < rows[0] < rows[1]
    assert cte.dolphin_loss_mag(1e3, 5.0, 800.0, 52000.0) > rows[1]


@pytest.fixture(scope="module")
def cte_store(tmp_path_factory, tiny_config):
    """The tiny store's exposures read out with WFPC2's CTE (same seed: same stars, same noise)."""
    from dataclasses import replace

    import dask

    from starcenter.cubes.sim.simulate import simulate

    path = tmp_path_factory.mktemp("cte") / "tiny-cte.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, replace(tiny_config, cti=True), progress=False)
    return path


def _tree(path):
    return {p: p.stat().st_mtime_ns for p in Path(path).rglob("*") if p.is_file()}


def test_correct_store_undoes_the_cte_in_a_new_store_and_resumes(cte_store, tiny_store, tmp_path):
    import dask
    import xarray as xr

    from starcenter.cubes.stages.cte_correct import correct_store

    source = _tree(cte_store)
    out = tmp_path / "corrected.zarr"
    with dask.config.set(scheduler="synchronous"):
        assert correct_store(cte_store, out, progress=False) == {"written": 6, "skipped": 0}
        assert correct_store(cte_store, out, progress=False) == {"written": 0, "skipped": 6}
    assert _tree(cte_store) == source  # the source is never written
    fixed, read, clean = (xr.open_zarr(p, group="exposures") for p in (out, cte_store, tiny_store))
    for name in clean.coords:
        np.testing.assert_array_equal(fixed[name].values, clean[name].values)
    np.testing.assert_array_equal(fixed["dq"].values, read["dq"].values)
    bright = (clean["image"].values > 200) & (clean["image"].values < 3000)  # star pixels (DN), unsaturated
    before = np.median(np.abs(read["image"].values - clean["image"].values)[bright])
    after = np.median(np.abs(fixed["image"].values - clean["image"].values)[bright])
    # what is left is the A/D rounding of two different readouts (~0.33 DN median |difference|)
    assert before > 1.0 and after < 0.4 < before / 2.5, (before, after)
    truth = xr.open_zarr(out, group="truth")
    np.testing.assert_array_equal(truth["x"].values, xr.open_zarr(cte_store, group="truth")["x"].values)


def test_correct_store_refuses_another_source_or_model_and_touches_nothing(cte_store, tiny_store, tmp_path):
    import dask

    from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
    from starcenter.cubes.stages.cte_correct import correct_store

    out = tmp_path / "corrected.zarr"
    with dask.config.set(scheduler="synchronous"):
        correct_store(cte_store, out, progress=False)
        kept = _tree(out)
        with pytest.raises(StoreMismatchError, match="trap_scale"):
            correct_store(cte_store, out, trap_scale=1.2, progress=False)
        with pytest.raises(StoreMismatchError, match="source"):
            correct_store(tiny_store, out, progress=False)
        with pytest.raises(BadArgumentError, match="another store"):
            correct_store(cte_store, cte_store, progress=False)
    assert _tree(out) == kept
