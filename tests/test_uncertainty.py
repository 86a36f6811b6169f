"""Per-star uncertainties of network centres: the likelihood loss, the conformal calibration,
the sigma and flags written by predict, and bad rasters (never a confident number)."""

import json

import dask
import numpy as np
import pytest
import xarray as xr

from starcenter.cubes import constants as C
from starcenter.cubes.errors import StoreMismatchError
from starcenter.model.uncertainty import NOMINAL, calibrate, calibrated_sigma, coverage

from .conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("derived"), "library", catalog=True)


@pytest.fixture(scope="module")
def sigma_model(store, tmp_path_factory):
    from starcenter.model.train import train

    out = tmp_path_factory.mktemp("models") / "wf3-sigma.keras"
    meta = train(store, "WF3", "v1", "fast", epochs=3, out=out, target="exact", verbose=0, uncertainty=True)
    return out, meta


def test_calibration_restores_nominal_coverage_on_fresh_stars():
    """A raw sigma wrong by a factor that follows magnitude and focus (2x too small for faint
    stars at negative focus, 2x too large for bright ones at positive focus): the calibration
    fitted on 10,000 stars restores +-1 / +-2 sigma coverage in every corner of that space."""
    from starcenter.model.uncertainty import covariates

    rng = np.random.default_rng(2)
    n = 20000
    mag, focus = rng.uniform(-11, -6, n), rng.uniform(-1.0, 1.5, n)  # focus / 10 um, as the input
    true_sigma = 0.005 * 10 ** (0.2 * (mag + 11))  # px, fainter -> larger
    wrong = np.exp(-0.35 * (mag + 8.5) + 0.4 * focus)  # smooth in both, 0.4x .. 3x
    raw = np.c_[true_sigma, true_sigma] * wrong[:, None]
    err = rng.normal(0, np.c_[true_sigma, true_sigma])
    cov = covariates(mag, focus[:, None], ("focus",))
    m, f, e = mag[10000:], focus[10000:], err[10000:]
    corners = ((m > -8.5) & (f < 0), (m < -8.5) & (f > 0.5))
    for sel in corners:
        assert abs(coverage(e[sel], raw[10000:][sel], 1) - NOMINAL[1]) > 0.15
    for degree in (1, 2):
        cal = calibrate(err[:10000], raw[:10000], cov[:10000], names=["mag", "focus"], degree=degree)
        assert cal["n"] == 10000 and np.asarray(cal["coef"]).shape == (2, 1 + 2 * degree)
        s = calibrated_sigma(raw[10000:], cov[10000:], cal)
        for sel in (m > -8.5, m <= -8.5, f > 0.25, f <= 0.25, *corners):
            assert abs(coverage(e[sel], s[sel], 1) - NOMINAL[1]) < 0.03
            assert abs(coverage(e[sel], s[sel], 2) - NOMINAL[2]) < 0.02


def test_calibration_with_the_raw_sigma_as_a_covariate_fixes_its_scale():
    """A raw sigma whose spread is twice the truth's (log raw = 2 log true + c): a factor of the
    magnitude alone leaves the extremes of the raw sigma miscovered; with each output's log raw
    sigma as a covariate the +-1 / +-2 sigma coverage is nominal at both ends, and the stored
    calibration applies to new stars (and old calibrations without it are unchanged)."""
    from starcenter.model.uncertainty import covariates

    rng = np.random.default_rng(5)
    n = 20000
    mag = rng.uniform(-11, -6, n)
    true = 0.01 * np.exp(rng.normal(0, 0.5, (n, 2)))  # px, spread unrelated to magnitude
    raw = true**2 / 0.01
    err = rng.normal(0, true)
    cov = covariates(mag)
    plain = calibrate(err[:10000], raw[:10000], cov[:10000], names=["mag"], degree=2)
    both = calibrate(err[:10000], raw[:10000], cov[:10000], names=["mag"], degree=2, sigma_covariate=True)
    assert "sigma_lo" in both and "sigma_lo" not in plain and np.shape(both["coef"]) == (2, 5)
    e, r = err[10000:], raw[10000:]
    for a in range(2):
        for sel in (r[:, a] < np.quantile(r[:, a], 0.2), r[:, a] > np.quantile(r[:, a], 0.8)):
            assert abs(coverage(e[sel, a], calibrated_sigma(r, cov[10000:], plain)[sel, a], 1) - NOMINAL[1]) > 0.1
            s = calibrated_sigma(r, cov[10000:], both)[sel, a]
            assert abs(coverage(e[sel, a], s, 1) - NOMINAL[1]) < 0.03
            assert abs(coverage(e[sel, a], s, 2) - NOMINAL[2]) < 0.02


def test_the_residual_step_corrects_what_the_polynomial_cannot():
    """A raw sigma wrong by a full sine period over the magnitude range (0.74x .. 1.35x), which
    a degree-2 polynomial cannot follow: the residual factor, piecewise linear in magnitude,
    restores +-1 / +-2 sigma coverage in every magnitude slice of fresh stars; below 4,000 stars
    there is none."""
    from starcenter.model.uncertainty import covariates

    rng = np.random.default_rng(7)
    n = 60000
    mag = rng.uniform(-11, -6, n)
    true = np.c_[0.01 * 10 ** (0.2 * (mag + 11)), 0.02 * 10 ** (0.2 * (mag + 11))]
    raw = true * np.exp(0.3 * np.sin(2 * np.pi * (mag + 11) / 5))[:, None]
    err = rng.normal(0, true)
    cov = covariates(mag)
    cal = calibrate(err[:40000], raw[:40000], cov[:40000], names=["mag"], degree=2)
    assert np.shape(cal["residual"]["log_factor"]) == (2, 9) and "residual" in cal["method"]
    assert "residual" not in calibrate(err[:3000], raw[:3000], cov[:3000], names=["mag"], degree=2)
    poly = {k: v for k, v in cal.items() if k != "residual"}
    m, e, r = mag[40000:], err[40000:], raw[40000:]
    slices = [(m > lo) & (m < lo + 1) for lo in (-10.5, -9.0, -7.5)]  # the sine's extremes, a node
    assert max(abs(coverage(e[sel], calibrated_sigma(r, cov[40000:], poly)[sel], 1) - NOMINAL[1])
               for sel in slices) > 0.04
    s = calibrated_sigma(r, cov[40000:], cal)
    for sel in slices:
        for a in range(2):
            assert abs(coverage(e[sel, a], s[sel, a], 1) - NOMINAL[1]) < 0.03
            assert abs(coverage(e[sel, a], s[sel, a], 2) - NOMINAL[2]) < 0.02


def test_calibration_of_the_earlier_form_still_applies():
    """Models written before keep their factors per magnitude bin (raw instrumental mag)."""
    from starcenter.model.uncertainty import covariates

    cal = {"mag_edges": [-11.0, -9.0, -6.0], "scale": [[1.0, 2.0], [3.0, 4.0]]}
    s = calibrated_sigma(np.ones((3, 2)), covariates(np.array([-10.0, -8.0, -5.0])), cal)
    assert s.tolist() == [[1.0, 2.0], [3.0, 4.0], [3.0, 4.0]]


def test_a_psf_epoch_beyond_the_calibration_is_flagged_not_a_magnitude():
    """The focus (or place) of a star beyond the calibration set's range is flagged (its factor
    is held at the edge); a magnitude beyond it is not; earlier per-bin calibrations flag nothing."""
    from starcenter.model.uncertainty import beyond_calibration, covariates

    rng = np.random.default_rng(3)
    mag, focus = rng.uniform(-11, -6, 500), rng.uniform(-1.0, 1.5, 500)
    err = rng.normal(0, 0.01, (500, 2))
    cov = covariates(mag, focus[:, None], ("focus",))
    cal = calibrate(err, np.full((500, 2), 0.01), cov, names=["mag", "focus"])
    new = covariates(np.array([-9.0, -13.0, -9.0, -9.0, -4.0]),
                     np.array([[0.2], [0.2], [-1.2], [1.7], [1.4]]), ("focus",))
    assert beyond_calibration(new, cal).tolist() == [False, False, True, True, False]
    assert not beyond_calibration(new, {"mag_edges": [-11.0, -6.0], "scale": [[1.0, 1.0]]}).any()
    assert not beyond_calibration(new, None).any()


def test_gaussian_nll_is_the_negative_log_likelihood():
    from starcenter.model.uncertainty import gaussian_nll

    t = np.array([[1.0, 2.0]], np.float32)
    p = np.array([[1.1, 1.8, np.log(0.2), np.log(0.5)]], np.float32)
    expected = np.mean([0.5 * (0.1 / 0.2) ** 2 + np.log(0.2), 0.5 * (0.2 / 0.5) ** 2 + np.log(0.5)])
    assert float(np.asarray(gaussian_nll(t, p))[0]) == pytest.approx(expected, rel=1e-5)


def test_network_sigma_is_calibrated_stored_and_written(store, sigma_model):
    from starcenter.model.predict import predict

    path, meta = sigma_model
    assert meta["outputs"] == "xy+sigma" and meta["features"] == ["mag"]
    coef = np.asarray(meta["calibration"]["coef"])
    assert coef.shape == (2, 2) and np.all(np.isfinite(coef)) and meta["calibration"]["names"] == ["mag"]
    assert json.loads(path.with_name(path.name + ".json").read_text())["calibration"] == meta["calibration"]
    with dask.config.set(scheduler="synchronous"):
        c = predict(store, path, "sigma-v1", progress=False)
    ras = xr.open_zarr(store, group="rasters").sel(chip="WF3")
    m = ras["mask"].values
    sig = c["sigma"].sel(chip="WF3").values
    assert np.all(np.isfinite(sig[m]) & (sig[m] > 0) & (sig[m] < 1)) and np.isnan(sig[~m]).all()
    assert (c["flags"].sel(chip="WF3").values[m] == 0).all()
    # on the stars it never saw (its test stars, same epoch) the calibrated sigma covers ~68 %
    from starcenter.evaluation.uncertainty import errors_and_sigmas

    err, s, _ = errors_and_sigmas(store, "sigma-v1")["WF3"]
    ok = np.isfinite(err) & np.isfinite(s)
    assert ok.sum() > 100 and 0.55 < coverage(err[ok], s[ok]) < 0.8


@pytest.mark.parametrize("kind", ["nan", "zeros", "saturated", "flagged"])
def test_bad_rasters_get_nan_centre_infinite_sigma_and_a_flag(sigma_model, kind):
    from starcenter.model.predict import FLAGS, centre

    path, _ = sigma_model
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, (4, 6, 6))
    r /= r.sum(axis=(1, 2), keepdims=True)
    sat = np.zeros(4, bool)
    if kind == "nan":
        r[1, 2, 3] = np.nan
    elif kind == "zeros":
        r[1] = 0.0
    elif kind == "saturated":
        sat[1] = True
    # a bleed column through raster 1 (a bad bit) and a vignetted-edge bit on raster 2 (not bad)
    dq = np.array([0, C.DQ_FLAGS["bleeding"], C.DQ_FLAGS["calibration_defect"], 0]) if kind == "flagged" else None
    mag = np.full(4, -9.0)
    out = centre(str(path), r, features=((mag + 8) / 2)[:, None], mag=mag, saturated=sat, dq=dq)
    assert np.isnan(out["xy"][1]).all() and np.isinf(out["sigma"][1]).all()
    bit = {"saturated": FLAGS["saturated"], "flagged": FLAGS["bad_pixels"]}.get(kind, FLAGS["bad_raster"])
    assert out["flags"][1] & bit
    assert np.isfinite(out["xy"][[0, 2, 3]]).all() and np.isfinite(out["sigma"][[0, 2, 3]]).all()
    assert (out["flags"][[0, 2, 3]] == 0).all()


def test_focus_input_needs_the_psf_fit(store):
    from starcenter.model.bridge import RasterSource

    with pytest.raises(StoreMismatchError, match="starcenter psf"):
        RasterSource(store, "WF3", "train", features=("mag", "focus")).count()


def test_cli_feature_names_are_the_bridge_features():
    from starcenter.arguments import feature_list
    from starcenter.model.bridge import FEATURES

    assert set(feature_list(",".join(FEATURES))) == set(FEATURES)


def test_flux_output_against_the_true_flux(store, tmp_path):
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.predict import predict
    from starcenter.model.train import train

    out = tmp_path / "pc1-flux.keras"
    meta = train(store, "PC1", "v1", "fast", epochs=2, out=out, target="exact", verbose=0,
                 uncertainty=True, flux=True)
    assert meta["outputs"] == "xy+flux+sigma" and len(meta["calibration"]["coef"]) == 3
    with dask.config.set(scheduler="synchronous"):
        c = predict(store, out, "flux-v1", progress=False)
    ras = xr.open_zarr(store, group="rasters").sel(chip="PC1")
    truth = xr.open_zarr(store, group="truth").sel(chip="PC1")
    m = ras["mask"].values & (ras["sim_index"].values >= 0)[None, :]
    idx = np.broadcast_to(ras["sim_index"].values, m.shape)[m]
    ratio = c["flux"].sel(chip="PC1").values[m] / truth["flux"].values[idx]
    assert abs(np.median(ratio) - 1) < 0.1  # e-: the flux is the star's, not a raster sum
    err = c["flux_err"].sel(chip="PC1").values[m]
    assert np.all(np.isfinite(err) & (err > 0))
    with pytest.raises(BadArgumentError, match="exact truth"):
        train(store, "PC1", "v1", epochs=1, out=tmp_path / "x.keras", uncertainty=True, flux=True)
    with pytest.raises(BadArgumentError, match="uncertainty"):
        train(store, "PC1", "v1", epochs=1, out=tmp_path / "y.keras", target="exact", flux=True)


def test_centres_of_older_rasters_are_replaced_not_mixed(store, sigma_model, tmp_path):
    """predict into a centers group written for rasters cut before (another catalog, another
    star axis): the stale group is replaced, never broadcast against the new rasters."""
    import shutil

    from starcenter.cubes import store as st
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.model.predict import predict

    path = tmp_path / "again.zarr"
    shutil.copytree(store, path)
    with dask.config.set(scheduler="synchronous"):
        predict(path, sigma_model[0], "net", progress=False)
        before = st.open_group(path, "rasters").sizes["star"]
        run_catalog(path, reference=1, progress=False)  # another reference: another star axis
        c = predict(path, sigma_model[0], "net", progress=False)
    ras = st.open_group(path, "rasters")
    assert ras.sizes["star"] != before and c.sizes["star"] == ras.sizes["star"]
    m = ras["mask"].sel(chip="WF3").values
    assert np.isfinite(c["xy"].sel(chip="WF3").values[m]).all()


def test_predict_without_a_model_uses_the_shipped_one_or_says_why_not(store, sigma_model, tmp_path,
                                                                      monkeypatch, capsys):
    """`starcenter generalist --install` ships a model without its optimizer state (shipping it
    again after a recalibration rewrites only its metadata); `predict` without --model finds it
    by chip and filter, and a chip with none is a clear error with nothing written."""
    import shutil

    from starcenter import cli
    from starcenter.cubes import store as st
    from starcenter.generalist import ship
    from starcenter.model import predict as P

    monkeypatch.setattr(P, "SHIPPED", tmp_path / "shipped")
    path, _ = sigma_model
    trained = tmp_path / "generalist-WF3-F555W.keras"
    shutil.copyfile(path, trained)
    shutil.copyfile(path.with_name(path.name + ".json"), trained.with_name(trained.name + ".json"))
    dest = ship(trained)
    assert dest.parent == tmp_path / "shipped" and dest.stat().st_size < 0.6 * trained.stat().st_size
    shipped, meta_path = dest.read_bytes(), trained.with_name(trained.name + ".json")
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "note": "recalibrated"}))
    ship(trained)  # the same weights, new metadata (a recalibration): the model file is left as it is
    assert dest.read_bytes() == shipped
    assert json.loads(dest.with_name(dest.name + ".json").read_text())["note"] == "recalibrated"
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    base = ["predict", str(copy), "--scheduler", "synchronous", "--quiet"]
    assert cli.main(base) == 2  # every chip: PC1 has none
    assert "no shipped generalist model for PC1 in F555W" in capsys.readouterr().err
    assert not st.has_group(copy, "centers/generalist")
    assert cli.main(base + ["--chip", "WF3"]) == 0
    c = xr.open_zarr(copy, group="centers/generalist")
    m = xr.open_zarr(copy, group="rasters")["mask"].sel(chip="WF3").values
    assert m.sum() > 100 and np.isfinite(c["xy"].sel(chip="WF3").values[m]).all()


def test_recalibrate_on_another_set_rewrites_the_metadata(store, sigma_model, tmp_path):
    """`starcenter calibrate MODEL STORE`: the calibration made on every star of a set (here the
    training store's stars it never trained on, 'unseen'), the one replaced kept, and predict
    redoes the chip; a model without sigma outputs, too few stars, a chip mismatch are clear
    errors, the metadata left as it was."""
    import shutil

    from starcenter.cli import main
    from starcenter.cubes.errors import BadArgumentError
    from starcenter.model.predict import predict
    from starcenter.model.uncertainty import recalibrate

    path, meta = sigma_model
    model = tmp_path / path.name
    shutil.copytree(path, model) if path.is_dir() else shutil.copyfile(path, model)
    shutil.copyfile(path.with_name(path.name + ".json"), model.with_name(model.name + ".json"))
    with dask.config.set(scheduler="synchronous"):
        before = predict(store, model, "recal", progress=False)["sigma"].sel(chip="WF3").values
    assert main(["calibrate", str(model), str(store), "--stars", "unseen"]) == 0
    with dask.config.set(scheduler="synchronous"):  # the same model calibrated again: redone
        after = predict(store, model, "recal", progress=False)["sigma"].sel(chip="WF3").values
    ok = np.isfinite(before)
    assert ok.any() and np.array_equal(ok, np.isfinite(after)) and not np.allclose(before[ok], after[ok])
    new = json.loads(model.with_name(model.name + ".json").read_text())
    assert new["calibration_before"] == meta["calibration"]
    cal = new["calibration"]
    assert "unseen stars of every exposure" in cal["on"] and cal["n"] > meta["calibration"]["n"]
    assert np.all(np.isfinite(cal["coef"])) and cal["names"] == ["mag"]
    assert np.shape(cal["coef"]) == (2, 5) and len(cal["sigma_lo"]) == 2  # degree 2 in mag and log raw sigma
    plain = tmp_path / "plain.keras.json"
    plain.write_text(json.dumps({**meta, "outputs": "xy"}))
    with pytest.raises(BadArgumentError, match="predicts no sigma"):
        recalibrate(tmp_path / "plain.keras", store)
    assert json.loads(plain.read_text())["outputs"] == "xy"
    with pytest.raises(BadArgumentError, match="a calibration needs at least"):
        recalibrate(model, store, stars="test")  # this tiny store's 92 test rasters of WF3
    with pytest.raises(BadArgumentError, match="trained on WF3 but asked to centre PC1"):
        recalibrate(model, store, chip="PC1")
    assert json.loads(model.with_name(model.name + ".json").read_text()) == new


def test_classical_calibration_plumbing_on_the_store_it_was_fitted_on(store):
    """evaluation.uncertainty.classical_calibration fitted on a store and applied to the same
    store through errors_and_sigmas: every star's covariates line up with its error, so in-sample
    each level's own fit gives its nominal coverage (a check of the plumbing, not of the transfer
    to other epochs, which benchmarks/bench_uncertainty.py measures), and the sigma applied (the
    geometric mean of the two) lies between them."""
    from starcenter.evaluation.uncertainty import CLASSICAL_FISHER, classical_calibration, errors_and_sigmas

    cal = classical_calibration(store, degree=1)
    assert set(cal) == {"PC1", "WF3"} and cal["WF3"]["names"] == ["mag"]  # no PSF-epoch fit here
    level = {lv: {c: {**v, "coef": v[f"coef_{lv}"]} for c, v in cal.items()} for lv in (68, 95)}
    e_s = {k: errors_and_sigmas(store, CLASSICAL_FISHER, stars="all", calibration=c)
           for k, c in (("raw", None), ("mean", cal), (68, level[68]), (95, level[95]))}
    for chip in cal:
        e, s0, _ = e_s["raw"][chip]
        ok = np.isfinite(e) & np.isfinite(s0)
        s = {k: v[chip][1][ok] for k, v in e_s.items()}
        e = e[ok]
        assert ok.sum() > 500 and all(np.isfinite(v).all() for v in s.values())
        assert abs(coverage(e, s[68], 1) - NOMINAL[1]) < 0.01 and abs(coverage(e, s[95], 2) - NOMINAL[2]) < 0.01
        assert coverage(e, s["raw"], 1) < 0.5  # the library ePSF's mismatch: Fisher sigma far too small
        c68, c95 = coverage(e, s[68], 1), coverage(e, s[95], 1)
        assert min(c68, c95) - 0.01 <= coverage(e, s["mean"], 1) <= max(c68, c95) + 0.01
