"""The shipped generalist networks (never retrained here): present, small, with their training
provenance, and centring simulated stars of an epoch they never saw (the tiny store's)."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from starcenter.cubes import constants as C
from starcenter.generalist import CALIBRATION_METHOD
from starcenter.model.predict import FLAGS, SHIPPED, centre, shipped_model

from .conftest import derive_store

SHIPPED_MODELS = sorted(SHIPPED.glob("generalist-*.keras")) if SHIPPED.is_dir() else []


def test_every_chip_has_a_shipped_model_in_f555w():
    assert {p.name for p in SHIPPED_MODELS} >= {f"generalist-{c}-F555W.keras" for c in C.CHIPS}


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: p.stem)
def test_shipped_model_is_small_and_says_how_it_was_made(path):
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    chip, filt = path.stem.split("-")[1:]
    assert meta["chip"] == chip and meta["filter"] == filt and shipped_model(chip, filt) == path
    members = len(meta.get("ensemble", {}).get("members", [None]))  # an ensemble: its members' mean
    assert path.stat().st_size < 1.5e6 * members  # bytes: weights only, no optimizer state
    # Paper II's inputs and the PSF epoch, and for a network correcting the classical fit its centre
    assert meta["outputs"] == "xy+flux+sigma" and meta["features"][:4] == ["mag", "focus", "chip_x", "chip_y"]
    assert meta["features"][4:] in ([], ["classical_x", "classical_y"])
    gen = meta["generalist"]
    assert gen["features"] == meta["features"]
    assert "SIMULATIONS" in gen["label"] and gen["simulation"]["filter"] == filt
    lo, hi = gen["focus_range_um"]  # the training epochs span at least #13's -10 .. +15 um
    assert gen["simulation"]["field_varying"] and lo <= -10.0 and hi >= 15.0
    assert gen["simulation"]["focus_sweep_um"] == [lo, hi] and gen["simulation"]["focus_sweep_range"]
    assert gen["catalog_central"] == 1.0 and meta["target"] == "exact"
    cal = meta["calibration"]  # recalibrated on a set of its own: a regression on every input
    assert cal["names"] == meta["features"] and np.all(np.isfinite(cal["coef"]))
    assert cal["n"] >= 4000 and gen["calibration_set"]["simulation"]["filter"] == filt
    assert gen["calibration_set"]["simulation"]["seed"] != gen["simulation"]["seed"]
    assert gen["calibration_set"]["method"] == CALIBRATION_METHOD and "residual" in cal


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("generalist"), "true", catalog=True)


@pytest.mark.parametrize("chip, limit", [("PC1", 10.0), ("WF3", 10.0)])
def test_shipped_model_centres_an_unseen_epoch(store, tiny_config, chip, limit):
    """The tiny store (true focus +5 um, 3 exposures; stars and noise never seen) has no field
    variation: every star has the chip-centre PSF, which is what chip position (0, 0) means to
    the network. Given each star's magnitude, that position, the true focus and, for a network
    that corrects the classical fit, that fit (here made with the true ePSF), the shipped model
    centres the bright stars to ``limit`` mpix (measured, with each model's correction weight:
    PC1's network 5.9 / 5.9, WF3's two 4.9 / 4.7; unweighted, WF3 4.8 / 4.5 and the PC1 ensemble
    before, reading the raster alone, 5.5 / 5.4; the WF3 ensemble before, 15.1 / 11.3) and its
    sigma is of the errors' size."""
    ras = xr.open_zarr(store, group="rasters").sel(chip=chip)
    m = ras["mask"].values
    mag = ras["mag"].values[m]
    classical = ras["prelim"].values[m] - ras["corner"].values[m] - 3  # the fit in its raster (bridge)
    columns = {"mag": (mag + 8) / 2, "focus": np.full(mag.size, tiny_config.focus_um / 10),
               "chip_x": np.zeros(mag.size), "chip_y": np.zeros(mag.size),
               "classical_x": classical[:, 0], "classical_y": classical[:, 1]}
    names = json.loads(Path(str(shipped_model(chip, "F555W")) + ".json").read_text())["features"]
    feats = np.stack([columns[n] for n in names], axis=1)
    out = centre(str(shipped_model(chip, "F555W")), ras["raster"].values[m], feats, mag, gain=C.GAIN[7][chip])
    err = (out["xy"] - ras["target_exact"].values[m]) * 1e3
    bright = np.isfinite(err).all(axis=1) & (mag < -9.0)  # > 4000 DN, ~28,000 e-
    assert bright.sum() > 50
    robust = 1.4826 * np.median(np.abs(err[bright] - np.median(err[bright], axis=0)), axis=0)
    assert np.all(robust < limit), robust  # mpix
    ratio = np.median(out["sigma"][bright] * 1e3, axis=0) / robust
    assert np.all((ratio > 0.3) & (ratio < 2.0)), ratio
    assert not (out["flags"][bright] & FLAGS["sigma_extrapolated"]).any()
    # the same stars said to be at +20 um, beyond the calibration set's -10 .. +15 um: a centre,
    # and a flag saying its sigma is extrapolated
    feats[:, 1] = 2.0
    far = centre(str(shipped_model(chip, "F555W")), ras["raster"].values[m], feats, mag, gain=C.GAIN[7][chip])
    assert np.isfinite(far["xy"][bright]).all() and np.isfinite(far["sigma"][bright]).all()
    assert (far["flags"][bright] == FLAGS["sigma_extrapolated"]).all()


def test_generalist_recalibrates_on_a_calibration_set_of_its_own(fitted_store, tmp_path, monkeypatch):
    """`starcenter generalist --calibration-exposures N` with the models already trained: no
    training set is built, each model's sigma is calibrated on every star of the calibration
    set (here the tiny store with its PSF epoch fitted stands in for it: stars and an epoch the
    shipped model never saw), the set is recorded, and a rerun neither rebuilds nor recalibrates."""
    import shutil

    import dask

    from starcenter import generalist as G
    from starcenter.cubes import pipeline
    from starcenter.cubes.params import TransformParams

    calib = tmp_path / "calib.zarr"
    shutil.copytree(fitted_store, calib)
    with dask.config.set(scheduler="synchronous"):
        pipeline.run_catalog(calib, transform_params=TransformParams(central=1.0), progress=False)
    built = []
    monkeypatch.setattr(G, "build_set", lambda path, cfg, *a: built.append(path.name) or calib)
    out = tmp_path / "gen"
    out.mkdir()
    src = shipped_model("PC1", "F555W")
    for p in (src, src.with_name(src.name + ".json")):
        shutil.copyfile(p, out / p.name)
    before = json.loads(src.with_name(src.name + ".json").read_text())
    with dask.config.set(scheduler="synchronous"):
        paths = G.run_generalist(out, chips=("PC1",), exposures=32, epochs=30, calibration_exposures=16,
                                 progress=False)
    assert built == ["calib-F555W.zarr"] and paths == [out / src.name]
    meta = json.loads((out / (src.name + ".json")).read_text())
    assert meta["calibration_before"] == before["calibration"] and str(calib) in meta["calibration"]["on"]
    assert meta["calibration"]["n"] >= 100 and np.all(np.isfinite(meta["calibration"]["coef"]))
    rec = meta["generalist"]["calibration_set"]["simulation"]
    assert rec["seed"] == 1 + G.CALIBRATION_SEED_OFFSET  # run_generalist's seed (1) + the offset
    assert rec["n_exposures"] == 16 and rec["field_varying"]
    training = lambda g: {k: v for k, v in g.items() if k != "calibration_set"}  # noqa: E731
    assert training(meta["generalist"]) == training(before["generalist"])  # its provenance kept
    with dask.config.set(scheduler="synchronous"):
        G.run_generalist(out, chips=("PC1",), exposures=32, epochs=30, calibration_exposures=16,
                         progress=False)
    assert built == ["calib-F555W.zarr"]
    assert json.loads((out / (src.name + ".json")).read_text()) == meta


def _bench():
    from .helpers import benchmark

    return benchmark("bench_generalist")


def test_the_benchmark_puts_an_estimator_at_the_bound_at_one():
    """bench_generalist's error over the bound per flux bin: 1 for errors drawn at each star's own
    bound, though the bounds spread with phase and place (pooled robust / rms bound read 0.87)."""
    from .test_cramer_rao import efficient_errors

    bench = _bench()
    ex, bx = efficient_errors(seed=1)
    ey, by = efficient_errors(seed=2)
    flux = np.full(len(ex), 5e4)
    rows = bench._bins(np.c_[ex, ey], flux, bx * 1e-3, by * 1e-3, np.ones(len(ex), bool))
    assert [r["flux_e"] for r in rows] == [[3e4, 1e5]] and abs(rows[0]["ratio"] - 1) < 0.02, rows
    rows = bench._bins(np.c_[ex, ey] * 1.2, flux, bx * 1e-3, by * 1e-3, np.ones(len(ex), bool))
    assert abs(rows[0]["ratio"] - 1.2) < 0.03, rows


def test_the_benchmark_verdict_names_the_worst_case_of_each_floor():
    """bench_generalist.verdict: PASS only where every held-out set and chip holds the floor, and a
    FAIL names the set, chip and flux bin that broke it."""
    bench = _bench()

    def row(ratios, robust, phase=(1.0, 2.0), outer=1.05):
        bins = [{"flux_e": list(b), "ratio": r, "robust_mpix": m} for b, r, m in zip(bench.FLUX_BINS, ratios, robust)]
        alone = [dict(b, ratio=0.9 * b["ratio"]) for b in bins]  # the isolated stars closer to the bound
        return {"bins": bins, "bins_isolated": alone, "phase_p2p_mpix": list(phase),
                "outer_over_centre": outer, "bound_outer_over_centre": 1.1}

    good = {"generalist": row([2.0, 1.5, 1.2, 1.25], [40, 20, 10, 6]),
            "classical-library": row([2.0, 1.6, 1.3, 1.3], [40, 21, 11, 7]),
            "classical-fitted": row([2.0, 1.5, 1.2, 1.25], [41, 20, 10, 6.5])}
    bad = dict(good, generalist=row([2.0, 1.5, 1.2, 1.4], [40, 20, 10, 7], phase=(3.5, 1.0), outer=1.2))
    lines = bench.verdict({"held_out": {"+4.5": {"PC1": good, "WF3": good}}})
    assert all(line.startswith("PASS") for line in lines), lines
    lines = bench.verdict({"held_out": {"+4.5": {"PC1": good}, "-12.0": {"WF3": bad}}})
    assert [line[:4] for line in lines] == ["FAIL", "FAIL", "FAIL", "FAIL", "PASS", "PASS"], lines
    assert "1.4 (-12.0 um WF3 3e+04-1e+05)" in lines[0] and "3.5 (-12.0 um WF3)" in lines[1]
    assert "1.2 (-12.0 um WF3)" in lines[2] and "1.08 (-12.0 um WF3 3e+04-1e+05)" in lines[3]
    assert "1.26 (-12.0 um WF3 3e+04-1e+05)" in lines[4] and "1.09 (-12.0 um WF3)" in lines[5]
    lines = bench.verdict({"held_out": {"+4.5": {"PC1": good}, "+17.0": {"WF3": {"no_stars": 0}}}})
    assert [line[:4] for line in lines] == ["FAIL"] * 7 and lines[-1].endswith("+17.0 um WF3"), lines
    drop = ("bins_isolated", "bound_outer_over_centre")
    older = {m: {k: v for k, v in r.items() if k not in drop} for m, r in good.items()}
    lines = bench.verdict({"held_out": {"+4.5": {"PC1": older}}})  # a report from before these figures
    assert all(line.startswith("FAIL") and "not measured" in line for line in lines[4:]), lines


@pytest.mark.parametrize("chip, filt", [("PC1", "F814W"), ("WF3", "F555W")])
def test_generalist_builds_and_records_sets_without_neighbours(tmp_path, monkeypatch, chip, filt):
    """`starcenter generalist --neighbours subtract --neighbour-passes 2`: the calibration set is
    built that way and that is recorded, so a model calibrated on other sets is calibrated again;
    a network correcting the classical fit (WF3 F555W) gets its correction weight first, then its
    sigma; one reading the raster alone (PC1 F814W) its sigma only
    (the set building and the calibrations themselves are stubbed: this is the plumbing)."""
    import shutil

    from starcenter import generalist as G
    from starcenter.model import correction, uncertainty

    built, calls = [], []
    monkeypatch.setattr(G, "build_set", lambda path, cfg, opts, progress, nb, passes:
                        built.append((path.name, nb, passes)) or path)
    monkeypatch.setattr(uncertainty, "recalibrate", lambda *a, **k: calls.append("sigma") or {"n": 0})
    monkeypatch.setattr(correction, "calibrate_weight", lambda *a, **k: calls.append("weight") or
                        {"weight": [0.5], "mag_edges": [-12, -6]})
    out = tmp_path / "gen"
    out.mkdir()
    src = shipped_model(chip, filt)
    for p in (src, src.with_name(src.name + ".json")):
        shutil.copyfile(p, out / p.name)
    run = lambda: G.run_generalist(out, filters=(filt,), chips=(chip,), calibration_exposures=16,  # noqa: E731
                                   progress=False, neighbours="subtract", neighbour_passes=2)
    run()
    assert built == [(f"calib-{filt}.zarr", "subtract", 2)]
    assert calls == (["weight", "sigma"] if filt == "F555W" else ["sigma"])
    record = json.loads((out / (src.name + ".json")).read_text())["generalist"]["calibration_set"]
    assert record["rasters"] == "subtract" and record["neighbour_passes"] == 2
    assert record.get("correction_weight") == (True if filt == "F555W" else None)
    run()
    assert len(built) == 1 and len(calls) <= 2  # calibrated on that set already


def test_generalist_features_reach_every_network_and_its_provenance(tmp_path):
    """`starcenter generalist --features ...,classical_x,classical_y`: every training job takes
    them, and each model's provenance records them (the default stays Paper II's inputs + focus)."""
    from starcenter import generalist as G
    from starcenter.cli import build_parser

    args = build_parser().parse_args(["generalist", str(tmp_path / "g"), "--features",
                                      "mag,focus,chip_x,chip_y,classical_x,classical_y"])
    assert args.features[-2:] == ("classical_x", "classical_y")
    assert build_parser().parse_args(["generalist", str(tmp_path / "g")]).features == G.FEATURES
    sets = G._jobs(tmp_path, "F555W", ("WF3", "WF4"), 8, 1, "v2", 1, 3, features=args.features)
    jobs = [j for _, _, js in sets.values() for j in js]
    assert len(jobs) == 6 and all(j["features"] == args.features for j in jobs)
    model = tmp_path / "m.keras"
    model.with_name("m.keras.json").write_text(json.dumps({"chip": "WF3"}))
    G._add_provenance(model, G.training_config("F555W", ("WF3",), 8, 1), 1, features=args.features)
    assert json.loads(model.with_name("m.keras.json").read_text())["generalist"]["features"] == list(args.features)


def test_a_network_correcting_the_fitted_epsf_fit_refuses_other_fits(store, tmp_path):
    """The shipped WF3 model corrects the classical fit with each exposure's fitted ePSF: on
    rasters cut from other fits (here the true ePSF's) predict says what to run, and writes
    nothing; --force goes past that check (and on to the next: no fitted focus here)."""
    import shutil

    from starcenter.cubes import store as st
    from starcenter.cubes.errors import StoreMismatchError
    from starcenter.model.predict import predict

    meta = json.loads(Path(str(shipped_model("WF3", "F555W")) + ".json").read_text())
    assert meta["features"][-2:] == ["classical_x", "classical_y"]
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    with pytest.raises(StoreMismatchError, match="detect --psf true.*detect --psf fitted"):
        predict(copy, None, "generalist", chip="WF3", progress=False)
    assert not st.has_group(copy, "centers/generalist")
    with pytest.raises(StoreMismatchError, match="psf --fit focus"):  # forced: still needs its focus input
        predict(copy, None, "generalist", chip="WF3", force=True, progress=False)


def test_a_network_taking_the_psf_epoch_says_where_its_fit_failed(fitted_store, tmp_path):
    """Where the PSF-epoch fit of a chip was flagged on every exposure (detect fell back to the
    library ePSF: no focus input) predict refuses with the reason and writes nothing; where only
    some exposures lack it, it warns and those stars get no centre (flag no_feature), never a
    silent NaN. Detections without the neighbour passes its correction weight was calibrated on
    are said too."""
    import shutil
    import warnings

    import dask
    import zarr

    from starcenter.cubes import pipeline
    from starcenter.cubes import store as st
    from starcenter.cubes.errors import StoreMismatchError
    from starcenter.cubes.params import TransformParams
    from starcenter.model.predict import FLAGS, predict

    copy = tmp_path / "s.zarr"
    shutil.copytree(fitted_store, copy)
    with dask.config.set(scheduler="synchronous"):
        pipeline.run_catalog(copy, transform_params=TransformParams(central=1.0), progress=False)
    c = list(xr.open_zarr(copy, group="psf_fit")["chip"].values).index("WF3")
    fit = zarr.open_group(str(copy), mode="r+", path="psf_fit")
    focus, status = fit["focus"][:], fit["status"][:]
    fit["focus"][:, c], fit["status"][:, c] = np.nan, 2  # outside_grid
    with pytest.raises(StoreMismatchError, match="no fitted PSF epoch for WF3 on any exposure.*outside grid"):
        predict(copy, None, "generalist", chip="WF3", progress=False)
    assert not st.has_group(copy, "centers/generalist")
    fit["focus"][:, c], fit["status"][:, c] = focus[:, c], status[:, c]
    fit["focus"][0, c], fit["status"][0, c] = np.nan, 2
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        out = predict(copy, None, "generalist", chip="WF3", progress=False).sel(chip="WF3")
    assert any("1 of 3 exposures of WF3 have no fitted PSF epoch (outside grid)" in str(w.message) for w in said)
    # its correction weight was calibrated on 2-pass fits; these detections have none: said too
    assert any("detections with 0 neighbour passes" in str(w.message) and "--neighbour-passes 2" in str(w.message)
               for w in said)
    mask = xr.open_zarr(copy, group="rasters")["mask"].sel(chip="WF3").values
    xy, flags = out["xy"].values, out["flags"].values
    assert np.isnan(xy[0][mask[0]]).all() and (flags[0][mask[0]] & FLAGS["no_feature"]).all()
    assert np.isfinite(xy[1:][mask[1:]]).mean() > 0.9
