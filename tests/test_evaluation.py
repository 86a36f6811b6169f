"""Evaluation: per-star rms over repeats, the full-offset view, the raster-size sweep."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tests.conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("eval"), "library", catalog=True)


def test_per_star_rms_recovers_the_injected_scatter():
    """Known truth: 400 stars, 30 exposures, each shifted, rotated slightly and scaled, with
    10 mpix of Gaussian noise per coordinate: the per-star rms must come back as ~10 mpix
    after the cubic transformations take the exposures into the reference frame."""
    from evaluation.metrics import per_star_rms_from

    rng = np.random.default_rng(3)
    n_exp, n_star, sigma = 30, 400, 0.010
    xy0 = rng.uniform(50, 750, (n_star, 2))
    xy = np.empty((n_exp, n_star, 2))
    for e in range(n_exp):
        th, s = rng.normal(0, 1e-4), 1 + rng.normal(0, 1e-4)
        rot = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        xy[e] = xy0 @ rot.T + rng.uniform(-2, 2, 2) + rng.normal(0, sigma, (n_star, 2))
    xy[5:, :10] = np.nan  # stars measured only 5 times are dropped (min_repeats 6)
    out = per_star_rms_from(xy, np.zeros((n_exp, n_star)), reference=0, min_repeats=6)
    assert len(out["x"]) == n_star - 10
    for ax in "xy":
        med = np.median(out[ax])
        # sample rms of 30 draws: median ~ sigma (the fit absorbs 10 of 30*400 dof per axis)
        assert 0.9 * sigma * 1e3 < med < 1.05 * sigma * 1e3, med


def test_full_offset_and_phase_views_agree(store):
    from cubes.transforms import offset_phase
    from evaluation.metrics import phase_data

    ph, full = phase_data(store, "classical"), phase_data(store, "classical", full=True)
    for chip in ph:
        for ax in "xy":
            np.testing.assert_allclose(offset_phase(full[chip][ax][0]), ph[chip][ax][0])
            np.testing.assert_array_equal(full[chip][ax][1], ph[chip][ax][1])


def test_evaluate_writes_the_paper_figures(store, tmp_path):
    from evaluation.report import evaluate

    m = evaluate(store, tmp_path)
    for png in ("std_error_vs_offset_phase.png", "std_error_vs_offset.png", "truth_vs_magnitude.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
    assert "classical" in m["truth"] and "paper" in (tmp_path / "report.md").read_text()


def test_raster_size_sweep_trains_per_size_and_restores_the_rasters(store, tmp_path):
    from evaluation.sweep import raster_size_sweep

    before = xr.open_zarr(store, group="rasters")
    raster, attrs = before["raster"].values, dict(before.attrs)
    res = raster_size_sweep(store, "WF3", sizes=(5, 7), arch="v1", epochs=1, out_dir=tmp_path,
                            progress=False)
    assert [r["size"] for r in res["sizes"]] == [5, 7] and res["kind"] == "SIMULATION"
    for r in res["sizes"]:
        assert r["n_test"] > 50 and all(np.isfinite(r["robust_mpix"])) and r["robust_mpix"][0] > 0
    assert (tmp_path / "error_vs_raster_size.png").exists()
    after = xr.open_zarr(store, group="rasters")
    assert after.attrs["size"] == attrs["size"] == 6
    np.testing.assert_array_equal(after["raster"].values, raster)
