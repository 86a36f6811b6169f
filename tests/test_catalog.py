"""Transforms, the average catalog and rasters on a tiny simulated store (stage level)."""

import shutil

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from starcenter.cubes.classical.stats import clipped_mean
from starcenter.cubes.classical.transforms import STATUS
from starcenter.cubes.errors import StoreMismatchError
from starcenter.cubes.params import TransformParams
from starcenter.cubes.stages.transforms import compute_transforms
from starcenter.cubes.store import consolidate

from .conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("derived"), "true", catalog=True)


def test_offsets_match_the_true_dithers(store):
    tr = xr.open_zarr(store, group="transforms")
    truth = xr.open_zarr(store, group="truth")
    assert (tr["status"].values == STATUS["ok"]).all()
    for k in range(tr.sizes["chip"]):
        for e in range(1, tr.sizes["exposure"]):
            tx = truth["x"].isel(chip=k).values
            true_dx = np.nanmedian(tx[0] - tx[e])  # reference - target
            assert float(tr["offset_x"][e, k]) == pytest.approx(true_dx, abs=0.01)
    se = tr["std_err_x"].values[1:] * 1e3
    assert np.all((se > 3) & (se < 60))  # mpix: true-ePSF centres of a crowded field
    assert tr["n_stars"].values[1:].min() > 50


def test_catalog_and_rasters(store):
    cat = xr.open_zarr(store, group="catalog")
    ras = xr.open_zarr(store, group="rasters")
    assert cat["truth"].dims == ("exposure", "chip", "star", "axis")
    m = ras["mask"].values
    assert m.sum() > 300
    r = ras["raster"].values[m]
    assert r.shape[1:] == (6, 6)
    np.testing.assert_allclose(r.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    t = ras["target"].values[m]
    has = np.all(np.isfinite(t), axis=1)  # no target where the catalog has no truth (count < 3)
    assert has.mean() > 0.8
    t = t[has]
    assert np.all((t >= 2.5 - 0.05) & (t < 3.5 + 0.05))  # the catalog truth sits near the peak pixel
    assert np.isnan(ras["target"].values[~m]).all()
    # catalog truth against the simulation's exact truth: median per-raster error (3 exposures)
    d = (ras["target"] - ras["target_exact"]).values[m] * 1e3
    d -= np.nanmean(d, axis=0)
    assert np.nanmedian(np.abs(d)) < 15
    assert ras["offset_phase"].dims == ("exposure", "chip", "axis")


def test_clipped_mean_rejects_outliers():
    rng = np.random.default_rng(0)
    m = rng.normal(0, 0.01, (200, 1, 3, 2))
    m[0, 0, 0, 0] = 5.0
    m[1:5, 0, 1, :] = np.nan
    mean, rms, count = clipped_mean(m)
    assert abs(mean[0, 0, 0]) < 0.005 and 194 <= count[0, 0, 0] <= 199  # the 5.0 outlier is gone
    assert count[0, 1, 0] <= 196  # NaN measures do not count


def test_clipped_mean_by_hand_needs_enough_exposures():
    """One star, one coordinate, an outlier of 1 px among 11 measures within 20 mpix: by hand,
    the outlier sits (1 - mean) / std = 3.3 sigma out and is clipped, leaving the mean, rms and
    count of the 11. With 3 exposures (the tiny fixtures), the largest possible |z| is
    (n - 1) / sqrt(n) = 1.15: nothing can ever be clipped."""
    good = np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.005, -0.005, 0.0, 0.015])
    vals = np.append(good, 1.0)
    z = (1.0 - vals.mean()) / vals.std()
    assert z > 3
    mean, rms, count = clipped_mean(vals[:, None])
    assert count[0] == 11
    assert mean[0] == pytest.approx(good.mean(), abs=1e-12) and rms[0] == pytest.approx(good.std(), abs=1e-12)
    three = np.array([0.0, 0.01, 1.0])
    mean, _, count = clipped_mean(three[:, None])
    assert count[0] == 3 and mean[0] == pytest.approx(three.mean())


def test_no_detections_is_a_clear_error(tiny_store, tmp_path):
    path = tmp_path / "nodet.zarr"
    shutil.copytree(tiny_store, path)
    with pytest.raises(StoreMismatchError, match="detect"):
        compute_transforms(path, progress=False)


def test_unmatched_and_missing_exposures_are_flagged_the_rest_completes(store, tmp_path, capsys):
    path = tmp_path / "bad.zarr"
    shutil.copytree(store, path)
    g = zarr.open_group(str(path), mode="r+")
    g["detections/x"][1, 0] = g["detections/x"][1, 0] + 300.0  # huge offset: matches nothing
    g["detections/done"][2, 1] = 0  # a chip missing from one exposure
    with dask.config.set(scheduler="synchronous"):
        tr = compute_transforms(path, TransformParams(), progress=False)
    st = tr["status"].values
    assert st[1, 0] in (STATUS["no_match"], STATUS["no_detections"], STATUS["too_few_stars"])
    assert st[2, 1] == STATUS["missing"]
    assert st[0, 0] == st[2, 0] == st[1, 1] == STATUS["ok"]
    out = capsys.readouterr().out
    assert "exposure 1 chip PC1" in out and "flagged and skipped" in out


def test_second_iteration_from_better_centres_improves_the_catalog(store, tmp_path):
    """--from-centers: centres = exact truth + 5 mpix noise (a stand-in for an unbiased network)
    must give a catalog truth much closer to the exact truth than the classical, pixel-phase
    biased one; a plain catalog rerun restores the classical catalog."""
    import shutil

    import xarray as xr

    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.stages.refine import refine_catalog
    from starcenter.evaluation.metrics import catalog_vs_exact

    path = tmp_path / "iter.zarr"
    shutil.copytree(store, path)
    before = catalog_vs_exact(path)
    ras = xr.open_zarr(path, group="rasters")
    rng = np.random.default_rng(0)
    exact = (ras["corner"] + ras["target_exact"]).values
    xy = np.where(ras["mask"].values[..., None], exact + rng.normal(0, 0.005, exact.shape), np.nan)
    st.write_dataset(path, schema.centers_group("oracle"), xr.Dataset(
        {"xy": ((schema.EXPOSURE, schema.CHIP, schema.STAR, "axis"), xy)},
        coords={schema.CHIP: ras[schema.CHIP].values}))
    refine_catalog(path, "oracle", progress=False)
    after = catalog_vs_exact(path)
    for chip in before:
        for a in range(2):
            assert after[chip]["median_abs_mpix"][a] < 0.6 * before[chip]["median_abs_mpix"][a], (before, after)
            assert after[chip]["median_abs_mpix"][a] < 5.0
    assert "oracle" in xr.open_zarr(path, group="rasters").attrs["catalog_source"]
    with pytest.raises(Exception, match="centers/missing|'centers/missing'"):
        refine_catalog(path, "missing", progress=False)
    # the promised rerun: a plain catalog restores the classical catalog and targets exactly
    from starcenter.cubes.pipeline import run_catalog

    with dask.config.set(scheduler="synchronous"):
        run_catalog(path, progress=False)
    assert catalog_vs_exact(path) == before
    assert "oracle" not in xr.open_zarr(path, group="rasters").attrs["catalog_source"]
    np.testing.assert_array_equal(xr.open_zarr(path, group="rasters")["target"].values,
                                  xr.open_zarr(store, group="rasters")["target"].values)


def test_error_model_recovers_a_known_scale_and_floor():
    from starcenter.cubes.classical.stats import error_model

    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.002, 0.06, 4000)  # px
    r = rng.normal(0, np.sqrt((1.5 * sigma) ** 2 + 0.01**2))
    a, b = error_model(r, sigma)
    assert a == pytest.approx(1.5, rel=0.1) and b == pytest.approx(0.01, rel=0.2)
    assert error_model(r[:5], sigma[:5]) == (1.0, 0.0)  # too few stars to say


def test_weighted_clipped_mean_weights_the_kept_measures():
    from starcenter.cubes.classical.stats import weighted_clipped_mean

    m = np.r_[np.zeros(10), 1.0, 1.0, 30.0][:, None]  # the 30 is clipped
    s = np.r_[np.ones(10), 0.1, 0.1, 0.1][:, None]
    mean, rms, count = weighted_clipped_mean(m, s)
    assert count[0] == 12
    assert mean[0] == pytest.approx(200 / 210)  # two measures of weight 100 against ten of 1
    mean, _, _ = weighted_clipped_mean(m, np.full_like(s, np.nan))  # no sigma: no weight
    assert np.isnan(mean[0])


def test_inverse_variance_weights_are_stored_and_refused_without_uncertainties(store, tmp_path):
    from starcenter.cubes.pipeline import run_catalog

    path = tmp_path / "w.zarr"
    shutil.copytree(store, path)
    with dask.config.set(scheduler="synchronous"):
        run_catalog(path, transform_params=TransformParams(weights="inverse-variance"), progress=False)
    tr = xr.open_zarr(path, group="transforms")
    assert '"weights": "inverse-variance"' in tr.attrs["params"]
    ok = tr["status"].values == 0
    assert np.all(tr["error_scale"].values[ok][1:] > 0)  # the reference's own fit: 0 residuals
    cat = xr.open_zarr(path, group="catalog")
    has = np.isfinite(cat["measures"].values)
    err = cat["measure_err"].values[has]
    assert np.all(np.isfinite(err) & (err > 0) & (err < 0.5))
    plain = xr.open_zarr(store, group="catalog")["mean"].values
    d = np.abs(cat["mean"].values - plain)
    assert np.nanmax(d) > 0 and np.nanmedian(d) < 0.01  # px: a weighted mean, not another catalog
    # detections made before uncertainties existed: the weights are refused, nothing written
    old = tmp_path / "old.zarr"
    shutil.copytree(store, old)
    del zarr.open_group(str(old), mode="r+")["detections/x_err"]
    consolidate(old)
    with pytest.raises(StoreMismatchError, match="no uncertainties"):
        run_catalog(old, transform_params=TransformParams(weights="inverse-variance"), progress=False)
    assert '"weights"' not in xr.open_zarr(old, group="transforms").attrs["params"]


def test_second_iteration_weights_centres_by_their_sigma(store, tmp_path):
    """An oracle whose centres are 10x noisier in half of the exposures, and says so in sigma:
    the weighted refine (catalog --weights inverse-variance) beats the unweighted one."""
    import xarray as xr

    from starcenter.cubes import schema
    from starcenter.cubes import store as st
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.stages.refine import refine_catalog
    from starcenter.evaluation.metrics import catalog_vs_exact

    result = {}
    for weights in ("none", "inverse-variance"):
        path = tmp_path / f"{weights}.zarr"
        shutil.copytree(store, path)
        with dask.config.set(scheduler="synchronous"):
            run_catalog(path, transform_params=TransformParams(weights=weights), progress=False)
        ras = xr.open_zarr(path, group="rasters")
        rng = np.random.default_rng(1)
        exact = (ras["corner"] + ras["target_exact"]).values
        sigma = np.where(np.arange(exact.shape[0])[:, None, None, None] % 2 == 1, 0.05, 0.002) * np.ones(exact.shape)
        m = ras["mask"].values[..., None]
        xy = np.where(m, exact + rng.normal(0, sigma), np.nan)
        dims = (schema.EXPOSURE, schema.CHIP, schema.STAR, "axis")
        st.write_dataset(path, schema.centers_group("oracle"), xr.Dataset(
            {"xy": (dims, xy), "sigma": (dims, np.where(m, sigma, np.nan))},
            coords={schema.CHIP: ras[schema.CHIP].values}))
        refine_catalog(path, "oracle", progress=False)
        assert xr.open_zarr(path, group="catalog").attrs["centers_weights"] == weights
        result[weights] = catalog_vs_exact(path)
    for chip in result["none"]:
        for a in range(2):
            assert result["inverse-variance"][chip]["median_abs_mpix"][a] < 0.7 * result["none"][chip]["median_abs_mpix"][a]


def test_catalog_can_hold_fainter_stars_than_the_transformations_use(store, tmp_path):
    """--catalog-min-flux below the transformations' min_flux: more (fainter) catalog stars,
    the transformations unchanged; the option is stored only when used."""
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.store import open_group

    path = tmp_path / "faint.zarr"
    shutil.copytree(store, path)
    base = TransformParams()
    assert "catalog_min_flux" not in base.to_json()
    faint = TransformParams(catalog_min_flux=100.0)
    assert faint.catalog_flux == 100.0 and base.catalog_flux == base.min_flux
    with dask.config.set(scheduler="synchronous"):
        run_catalog(path, transform_params=faint, progress=False)
    before, after = (open_group(p, "catalog") for p in (store, path))
    assert after.sizes["star"] > 1.2 * before.sizes["star"]
    ref_mag = after["ref_mag"].values
    faintest = -2.5 * np.log10(base.min_flux)  # instrumental mag of min_flux DN
    assert np.nanmax(ref_mag) > faintest + 0.3 and np.nanmax(before["ref_mag"].values) <= faintest + 1e-6
    t0, t1 = (open_group(p, "transforms") for p in (store, path))
    np.testing.assert_allclose(t1["coef_x"].values, t0["coef_x"].values)
    with pytest.raises(Exception, match="catalog_min_flux"):
        TransformParams(catalog_min_flux=-1.0)
