"""Evaluation: per-star rms over repeats, the full-offset view, the raster-size sweep."""

from __future__ import annotations

import json

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
    from starcenter.evaluation.metrics import per_star_rms_from

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


def test_full_offset_and_phase_views_by_hand(store):
    """phase_data against the transforms group read directly: every exposure with status 0
    except the reference, its offset (px) for the full view, offset mod 1 for the phase view,
    and std_err x 1000 (mpix) in both."""
    from starcenter.evaluation.metrics import phase_data

    tr = xr.open_zarr(store, group="transforms")
    ref = json.loads(tr.attrs["params"])["reference"]
    ph, full = phase_data(store, "classical"), phase_data(store, "classical", full=True)
    assert set(ph) == set(full) == {str(c) for c in tr.chip.values}
    for k, chip in enumerate(str(c) for c in tr.chip.values):
        keep = [e for e in range(tr.sizes["exposure"]) if e != ref and int(tr["status"][e, k]) == 0]
        assert len(keep) >= 1
        for ax in "xy":
            off = np.array([float(tr[f"offset_{ax}"][e, k]) for e in keep])
            se = np.array([float(tr[f"std_err_{ax}"][e, k]) * 1000 for e in keep])
            np.testing.assert_allclose(full[chip][ax][0], off, rtol=0, atol=0)
            np.testing.assert_allclose(ph[chip][ax][0], off - np.floor(off), atol=1e-12)
            assert np.all((ph[chip][ax][0] >= 0) & (ph[chip][ax][0] < 1))
            np.testing.assert_allclose(full[chip][ax][1], se, rtol=1e-12)
            np.testing.assert_allclose(ph[chip][ax][1], se, rtol=1e-12)


def test_evaluate_writes_the_paper_figures(store, tmp_path):
    from starcenter.evaluation.report import evaluate

    m = evaluate(store, tmp_path)
    for png in ("std_error_vs_offset_phase.png", "std_error_vs_offset.png", "truth_vs_magnitude.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
    assert "classical" in m["truth"] and "paper" in (tmp_path / "report.md").read_text()


def test_raster_size_sweep_trains_per_size_and_restores_the_rasters(store, tmp_path):
    from starcenter.sweep import raster_size_sweep

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


def _write_centers(store, name, xy, attrs):
    from starcenter.cubes import store as st

    ras = xr.open_zarr(store, group="rasters")
    ds = xr.Dataset({"xy": (("exposure", "chip", "star", "axis"), xy)},
                    coords={"exposure": ras.exposure.values, "chip": ras.chip.values,
                            "axis": np.array(["x", "y"], dtype=object)}, attrs=attrs)
    st.write_dataset(store, f"centers/{name}", ds)


def test_a_network_is_scored_only_on_the_stars_it_never_saw(store):
    """A 'memoriser' exact on the stars a model would have trained on and 50 mpix off on its
    test stars: on its own store the report must say 50 mpix (a report mixing in the training
    stars says ~22), the in-sample table 0; trained on other data, every star is scored."""
    from starcenter.evaluation.metrics import CLASSICAL_KEPT, CLASSICAL_TEST, transforms_from_centers
    from starcenter.evaluation.report import methods_in, truth_errors
    from starcenter.model.bridge import star_subset, training_identity
    from starcenter.model.predict import split_record

    ras = xr.open_zarr(store, group="rasters")
    chips = [str(c) for c in ras.chip.values]
    exact = (ras["corner"] + ras["target_exact"]).values
    test = np.stack([star_subset(ras["star_key"].values[c], "test", 5) for c in range(len(chips))])
    xy = exact + np.where(test[None, :, :, None], 0.050, 0.0)
    def record(identity, chip):
        return split_record({"dataset": {"identity": identity}, "split_seed": 5, "chip": chip},
                            store, chip)

    _write_centers(store, "memoriser", xy,
                   {f"split_{ch}": record(training_identity(store, ch), ch) for ch in chips})
    assert CLASSICAL_TEST in methods_in(store)
    mask = ras["mask"].values & np.all(np.isfinite(exact), axis=-1)
    out, seen = truth_errors(store, ["memoriser"]), truth_errors(store, ["memoriser"], "seen")
    for c, ch in enumerate(chips):
        assert out["memoriser"][ch]["rms_mpix"] == pytest.approx([50, 50], abs=0.01)
        assert out["memoriser"][ch]["n"] == int((mask[:, c] & test[c][None]).sum())
        assert seen["memoriser"][ch]["rms_mpix"] == pytest.approx([0, 0], abs=0.01)
        # the transformations of a network on its own store use its test stars alone
        _, _, n = transforms_from_centers(store, "memoriser", reference=0)
        assert 0 < n[1:, c].max() <= test[c].sum()
    other = {"data": "another-store", "stars": "x"}
    _write_centers(store, "elsewhere", xy, {f"split_{ch}": record(other, ch) for ch in chips})
    out = truth_errors(store, ["elsewhere"])
    for c, ch in enumerate(chips):
        frac = (mask[:, c] & test[c][None]).sum() / mask[:, c].sum()
        assert out["elsewhere"][ch]["rms_mpix"][0] == pytest.approx(50 * np.sqrt(frac), abs=0.01)
    # beside a network trained elsewhere (scored on every raster star), the classical fit of the
    # raster stars alone: its transformations use no other star
    assert CLASSICAL_KEPT in methods_in(store)
    _, _, n_kept = transforms_from_centers(store, CLASSICAL_KEPT, reference=0)
    assert np.all(n_kept[1:] <= mask.sum(axis=2)[1:]) and n_kept[1:].min() > 0
    import shutil

    for name in ("memoriser", "elsewhere"):
        shutil.rmtree(store / "centers" / name)
