import json
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.sim.simulate import make_config, simulate


def test_groups_open_with_plain_xarray(tiny_store, tiny_config):
    ex = xr.open_zarr(tiny_store, group="exposures")
    assert ex["image"].dims == ("exposure", "chip", "y", "x")
    assert ex["image"].shape == (3, 2, 800, 800) and ex["image"].dtype == np.float32
    assert ex["image"].data.chunksize == (1, 1, 800, 800)
    assert list(ex.chip.values) == ["PC1", "WF3"]
    assert ex.attrs["filter"] == "F555W" and ex.attrs["source"] == "simulation"
    assert float(ex.exptime[0]) == 160.0 and ex.done.values.all()
    truth = xr.open_zarr(tiny_store, group="truth")
    assert truth["x"].dims == ("exposure", "chip", "star")
    psf = xr.open_zarr(tiny_store, group="psf")
    assert psf["true"].sizes["ey"] == schema.EPSF_SAMPLES
    assert float(psf.focus[0]) == tiny_config.focus_um


@pytest.mark.parametrize("chip", ["PC1", "WF3"])
def test_sky_level_and_noise(tiny_config, chip):
    """A chip with its stars' flux set to 0, through the simulator's own chunk code: the mean is
    the sky (PC1 0.28 DN, WF3 1.39 DN) to 0.01 DN and the scatter is the noise model (sky and
    dark Poisson, read noise, digitisation) to 3 %: a chip with no sky, or the wrong gain or read
    noise, fails."""
    from starcenter.cubes.sim.field import gilliland_dithers
    from starcenter.cubes.sim.simulate import (
        ChipContext,
        chip_psfs,
        exposure_focus,
        simulate_chunk,
    )

    cfg = tiny_config
    one = np.zeros(1)
    ctx = ChipContext(chip, cfg, chip_psfs(chip, cfg), one, one, one, gilliland_dithers(cfg.seed, cfg.n_exposures),
                      exposure_focus(cfg))
    img = simulate_chunk(ctx, 0)[0].astype(float)
    gain, rn = C.GAIN[cfg.atodgain][chip], C.READ_NOISE[cfg.atodgain][chip]
    sky_e = cfg.sky * cfg.exptime * C.PIXEL_SCALE[chip] ** 2
    sigma_dn = np.sqrt(sky_e + C.DARK_RATE * cfg.exptime + rn**2 + gain**2 / 12) / gain
    assert img.mean() == pytest.approx(sky_e / gain, abs=0.01)
    assert img.std() == pytest.approx(sigma_dn, rel=0.03)


def test_true_positions_follow_the_dithers(tiny_store):
    ex = xr.open_zarr(tiny_store, group="exposures")
    truth = xr.open_zarr(tiny_store, group="truth")
    x = truth["x"].isel(chip=0).values
    y = truth["y"].isel(chip=0).values
    du, dv = float(ex.offset_u[1]), float(ex.offset_v[1])
    # PC1 axes are aligned with the global frame: pixels move by -offset / scale (+ tiny roll)
    shift = np.nanmedian(x[1] - x[0]), np.nanmedian(y[1] - y[0])
    assert shift[0] == pytest.approx(-du / C.PIXEL_SCALE["PC1"], abs=0.02)
    assert shift[1] == pytest.approx(-dv / C.PIXEL_SCALE["PC1"], abs=0.02)


def test_stars_sit_at_their_true_positions(tiny_store):
    """Fit bright isolated stars with the true ePSF: the pixel convention is consistent."""
    from scipy.optimize import least_squares

    ex = xr.open_zarr(tiny_store, group="exposures")
    truth = xr.open_zarr(tiny_store, group="truth")
    psf = xr.open_zarr(tiny_store, group="psf")
    for k in range(2):
        epsf = EffectivePSF(psf["true"].isel(chip=k, focus=0, field_y=0, field_x=0).values, 4)
        img = ex["image"].isel(exposure=1, chip=k).values
        gain = float(ex.gain[k])
        flux = truth["flux"].isel(chip=k).values
        x = truth["x"].isel(exposure=1, chip=k).values
        y = truth["y"].isel(exposure=1, chip=k).values
        ok = np.isfinite(flux)
        flux, x, y = flux[ok], x[ok], y[ok]
        picks = []
        for i in np.argsort(-flux):
            if not (2e4 < flux[i] < 8e4 and 20 < x[i] < 780 and 20 < y[i] < 780):
                continue
            near = np.hypot(x - x[i], y - y[i]) < 7
            if flux[near].sum() - flux[i] < 0.01 * flux[i]:
                picks.append(i)
            if len(picks) == 5:
                break
        assert len(picks) == 5
        errs = []
        for i in picks:
            ix, iy = int(round(x[i])), int(round(y[i]))
            yy, xx = np.mgrid[iy - 2:iy + 3, ix - 2:ix + 3]
            data = img[iy - 2:iy + 3, ix - 2:ix + 3] * gain

            def resid(p):
                return (p[2] * epsf.evaluate(xx - p[0], yy - p[1]) + p[3] - data).ravel()

            fit = least_squares(resid, [ix, iy, data.sum(), 0.0])
            errs.append(np.hypot(fit.x[0] - x[i], fit.x[1] - y[i]))
        assert np.median(errs) < 0.02, errs


def test_same_seed_same_bits_whatever_the_scheduler(tmp_path, tiny_store, tiny_config):
    other = tmp_path / "threads.zarr"
    with dask.config.set(scheduler="threads", num_workers=2):
        simulate(other, tiny_config, progress=False)
    a = zarr.open_group(str(tiny_store), mode="r")
    b = zarr.open_group(str(other), mode="r")
    for var in ("exposures/image", "exposures/dq", "truth/x", "truth/y"):
        np.testing.assert_array_equal(a[var][...], b[var][...], err_msg=var)


def test_different_seed_differs(tmp_path, tiny_store, tiny_config):
    from dataclasses import replace

    other = tmp_path / "seed.zarr"
    cfg = replace(tiny_config, n_exposures=2, chips=("PC1",), seed=tiny_config.seed + 1)
    with dask.config.set(scheduler="synchronous"):
        simulate(other, cfg, progress=False)
    a = zarr.open_group(str(tiny_store), mode="r")["exposures/image"][0, 0]
    b = zarr.open_group(str(other), mode="r")["exposures/image"][0, 0]
    assert not np.array_equal(a, b)


def test_resume_rewrites_only_unfinished_chunks(tmp_path, tiny_config):
    from dataclasses import replace

    cfg = replace(tiny_config, n_exposures=2, chips=("WF3",))
    path = tmp_path / "resume.zarr"
    with dask.config.set(scheduler="synchronous"):
        first = simulate(path, cfg, progress=False)
        assert (first.written, first.skipped) == (2, 0)
        root = zarr.open_group(str(path), mode="r+")
        good = root["exposures/image"][1, 0].copy()
        # an interrupted run: chunk (1, 0) half written, its marker never set
        root["exposures/image"][1, 0] = np.zeros_like(good)
        root["exposures/done"][1, 0] = 0
        again = simulate(path, cfg, progress=False)
        assert (again.written, again.skipped) == (1, 1)
        np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["exposures/image"][1, 0], good)
        third = simulate(path, cfg, progress=False)
        assert (third.written, third.skipped) == (0, 2)


def test_existing_store_with_other_parameters_is_refused_untouched(tmp_path, tiny_config):
    from dataclasses import replace

    cfg = replace(tiny_config, n_exposures=2, chips=("PC1",))
    path = tmp_path / "s.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, cfg, progress=False)
    before = {p: p.stat().st_mtime_ns for p in Path(path).rglob("*") if p.is_file()}
    with pytest.raises(StoreMismatchError, match="focus_um"):
        simulate(path, replace(cfg, focus_um=1.0), progress=False)
    after = {p: p.stat().st_mtime_ns for p in Path(path).rglob("*") if p.is_file()}
    assert before == after


def test_foreign_directory_is_refused(tmp_path, tiny_config):
    d = tmp_path / "notastore"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(StoreMismatchError, match="not a starcenter store"):
        simulate(d, tiny_config, progress=False)
    assert (d / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad, match", [
    (dict(chips=("PC2",)), "unknown chip"),
    (dict(filter="F606W"), "unknown filter"),
    (dict(n_exposures=1), "at least 2"),
    (dict(chips=("PC1", "PC1")), "twice"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(BadArgumentError, match=match):
        make_config("demo", **bad)


def test_unknown_preset():
    with pytest.raises(BadArgumentError, match="preset"):
        make_config("ngc104")


def test_breathing_and_field_varying_psf(tmp_path):
    cfg = make_config("demo", n_exposures=2, chips=("WF3",), breathing_um=0.5,
                      field_varying=True, seed=3)
    path = tmp_path / "fv.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, cfg, progress=False)
    psf = xr.open_zarr(path, group="psf")
    assert psf.sizes["focus"] == 3 and psf.sizes["field_y"] == 3
    ex = xr.open_zarr(path, group="exposures")
    f = ex.focus.values
    assert np.all(np.abs(f - cfg.focus_um) <= 0.5) and f[0] != f[1]
    assert np.isfinite(ex["image"].values).all()


def test_provenance_recorded(tiny_store, tiny_config):
    attrs = zarr.open_group(str(tiny_store), mode="r").attrs
    assert json.loads(attrs["starcenter_simulation"]) == json.loads(tiny_config.to_json())
    assert attrs["schema_version"] == schema.SCHEMA_VERSION
