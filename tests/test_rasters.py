"""The rasters stage and its cutout kernel (schema raster convention)."""

import numpy as np
import pytest
import xarray as xr

from starcenter.cubes import schema
from starcenter.cubes.classical.cutouts import cut

from .conftest import derive_store


@pytest.fixture(scope="module")
def store(tiny_store, tmp_path_factory):
    return derive_store(tiny_store, tmp_path_factory.mktemp("rasters"), "true", catalog=True)


def test_raster_pixels_are_the_image_pixels(store):
    ras = xr.open_zarr(store, group="rasters")
    ex = xr.open_zarr(store, group="exposures")
    e, c = 1, 1
    m = ras["mask"].values[e, c]
    s = int(np.flatnonzero(m)[0])
    cx, cy = ras["corner"].values[e, c, s]
    img = ex["image"].isel(exposure=e, chip=c).values[cy:cy + 6, cx:cx + 6]
    np.testing.assert_allclose(ras["raster"].values[e, c, s], img / img.sum(), rtol=1e-5)


def test_raster_dq_is_the_or_of_its_pixels_and_flagged_rasters_are_not_learnt(store, tmp_path):
    import shutil

    import zarr

    from starcenter.cubes import constants as C
    from starcenter.cubes.stages.rasters import raster_dq
    from starcenter.model.bridge import usable

    dq = np.zeros((20, 20), np.uint16)
    dq[:, 7] = C.DQ_FLAGS["bleeding"]
    dq[15, 15] = C.DQ_FLAGS["cosmic_ray"] | C.DQ_FLAGS["calibration_defect"]
    got = raster_dq(dq, np.array([[0, 0], [2, 2], [10, 10], [12, 0]]), 6)
    assert got.tolist() == [0, 64, 130, 0]
    # the stored dq follows the exposures' dq, and a flagged raster is not a training sample
    ras = xr.open_zarr(store, group="rasters")
    assert ras["dq"].dtype == np.uint16 and ras["dq"].dims == ("exposure", "chip", "star")
    path = tmp_path / "flagged.zarr"
    shutil.copytree(store, path)
    g = zarr.open_group(str(path), mode="r+")["rasters"]
    e, s = 1, int(np.flatnonzero(ras["mask"].values[1, 1])[0])
    before = usable(g, slice(None), 1)
    assert before[e, s]
    g["dq"][e, 1, s] = C.DQ_FLAGS["bleeding"]
    after = usable(g, slice(None), 1)
    assert not after[e, s] and (after ^ before).sum() == 1


def test_cut_masks_edges_and_nonpositive():
    img = np.ones((20, 20))
    img[10:, 10:] = -1
    r, corner, ok = cut(img, [1.0, 10.0, 15.0, 5.2], [10.0, 10.0, 15.0, 5.7], 6)
    assert ok.tolist() == [False, True, False, True]
    assert corner[3].tolist() == [2, 3]
    assert np.isfinite(r).all() and (r[~ok] == 0).all()


def test_only_selected_stars_get_rasters_and_chunks_follow_the_schema(store):
    ras = xr.open_zarr(store, group="rasters")
    sel = ras["selected"].values
    mask = ras["mask"].values
    assert mask.any() and not mask[:, ~sel].any()  # a raster only for a selected star
    assert (ras["corner"].values[mask] >= 0).all()
    chunks = ras["raster"].encoding["chunks"]
    assert chunks[0] == min(schema.EXPOSURE_BLOCK, ras.sizes["exposure"]) and chunks[1] == 1
    assert ras.attrs["complete"] == 1 and ras.attrs["size"] == 6


def test_rerun_with_other_parameters_rebuilds_the_group(store, tmp_path):
    import shutil

    import dask

    from starcenter.cubes.params import RasterParams
    from starcenter.cubes.stages.rasters import make_rasters

    path = tmp_path / "r.zarr"
    shutil.copytree(store, path)
    with dask.config.set(scheduler="synchronous"):
        make_rasters(path, RasterParams(size=5), progress=False)
    ras = xr.open_zarr(path, group="rasters")
    assert ras.sizes["ry"] == ras.sizes["rx"] == 5 and ras.attrs["size"] == 5
    m = ras["mask"].values
    np.testing.assert_allclose(ras["raster"].values[m].sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_q_cut_compares_a_faint_star_with_its_peers():
    """q's floor rises for faint stars: the median-q locus follows it, so the 1.5x cut keeps
    ordinary faint stars (which 1.5x the chip median would all cut) and still cuts a faint star
    whose q stands out from its peers (a neighbour); for bright stars the chip median stays."""
    from starcenter.cubes.stages.selection import q_locus

    rng = np.random.default_rng(0)
    mag = np.sort(rng.uniform(-11, -6, 400))
    floor = 0.017 * 10 ** (0.2 * (mag + 11))  # 0.017 (bright) .. 0.17 (faint)
    q = floor * rng.uniform(0.8, 1.2, mag.size)
    pulled = np.zeros(mag.size, bool)
    pulled[-60::3] = True  # faint stars pulled by a neighbour
    q[pulled] *= 3.0
    loc = q_locus(q, mag, np.ones(mag.size, bool))
    assert np.all(np.abs(loc[~pulled] / floor[~pulled] - 1) < 0.25)  # the locus is the floor
    keep = q <= 1.5 * np.maximum(np.median(q), loc)
    faint = mag > -7
    assert keep[faint & ~pulled].all() and not keep[pulled].any()
    assert np.mean(q[faint & ~pulled] <= 1.5 * np.median(q)) < 0.1  # the chip median alone cuts ~all


def test_stack_cut_allows_faint_stars_their_noise_and_still_cuts_neighbours():
    """Synthetic stacks (13 x 13 bins, 24 pixels per bin): a common ePSF-error pattern plus
    each star's noise. Faint clean stars (pixel noise 0.8 % of the flux) depart beyond the fixed
    0.002 on noise alone but pass the noise allowance; a neighbour's bump (1.5 % faint, 0.4 %
    bright) is cut either way; bright stars keep the fixed threshold."""
    from starcenter.cubes.stages.selection import STACK_NOISE_REL, stack_allowance, stack_statistics

    rng = np.random.default_rng(1)
    nb, den_bin, n = 13, 24, 200
    off = (np.arange(nb) - nb // 2) * 0.5
    common = 0.003 * np.exp(-(off[:, None] ** 2 + off[None, :] ** 2))
    s = np.where(np.arange(n) < n // 2, 0.008, 0.0006)  # faint | bright pixel noise (flux fraction)
    stack = common + rng.normal(size=(n, nb, nb)) * (s / np.sqrt(den_bin))[:, None, None]
    bumped = np.zeros(n, bool)
    bumped[::10] = True
    stack[bumped, nb // 2, nb // 2 + 2] += np.where(s[bumped] > 0.001, 0.015, 0.004)
    den = np.full((n, nb, nb), float(den_bin))
    departure, pixel = stack_statistics(stack * den, den, den * (s**2)[:, None, None])
    np.testing.assert_allclose(pixel, s, rtol=1e-9)
    keep = departure <= stack_allowance(pixel, 0.002)
    faint = s > 0.001
    assert np.mean(departure[faint & ~bumped] > 0.002) > 0.5  # the fixed cut alone loses them
    assert keep[faint & ~bumped].mean() > 0.95 and keep[~faint & ~bumped].all()
    assert not keep[bumped].any()
    np.testing.assert_allclose(stack_allowance(pixel, 0.002), np.maximum(0.002, STACK_NOISE_REL * s))
    # an unmeasured star (no bins) cannot pass
    den[0] = 0
    d0, p0 = stack_statistics(stack * den, den, den * (s**2)[:, None, None])
    assert np.isinf(d0[0]) and np.isinf(p0[0]) and not d0[0] <= stack_allowance(p0[:1], 0.002)[0]


def test_neighbour_free_takes_out_exactly_the_other_fitted_stars():
    """Against exact truth: the raster of a star among fitted neighbours equals its raster alone
    (with whatever was not fitted: here a saturated neighbour, which no model can hold)."""
    from starcenter.cubes.classical.fieldpsf import modelled, neighbour_free
    from starcenter.cubes.classical.psffit import FLAGS, model_image
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    epsf = get_epsf(PSFParams("WF3", "F555W"))
    x, y = np.array([20.3, 23.2, 5.5, 17.0]), np.array([19.6, 21.1, 30.2, 17.5])
    flux, flags = np.array([2e4, 5e4, 1e4, 8e3]), np.array([0, 0, 0, FLAGS["saturated"]])
    image = 3.0 + model_image((40, 40), x, y, flux, epsf)
    use = modelled(x, y, flux, flags)
    assert use.tolist() == [True, True, True, False]
    corners = np.array([[17, 17]])
    got, ok = neighbour_free(image, x, y, flux, use, np.array([0]), corners, epsf, 6)
    alone = 3.0 + model_image((40, 40), x[[0, 3]], y[[0, 3]], flux[[0, 3]], epsf)
    want, _, _ = cut(alone, [20.3], [19.6], 6)
    assert ok.all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
    plain, _, _ = cut(image, [20.3], [19.6], 6)
    assert np.abs(plain - want).max() > 1e-3  # the neighbour was in the raster before
    # a raster whose own star was not fitted (own -1) keeps its light
    got2, _ = neighbour_free(image, x[1:], y[1:], flux[1:], use[1:], np.array([-1]), corners, epsf, 6)
    np.testing.assert_allclose(got2, want, rtol=1e-5, atol=1e-8)


def test_rasters_without_neighbours_follow_the_detections(store, tmp_path):
    import json
    import shutil

    import dask

    from starcenter.cubes import store as st
    from starcenter.cubes.classical.fieldpsf import modelled, neighbour_free
    from starcenter.cubes.params import RasterParams
    from starcenter.cubes.stages.rasters import _detections_epsf, make_rasters

    path = tmp_path / "nb.zarr"
    shutil.copytree(store, path)
    with dask.config.set(scheduler="synchronous"):
        make_rasters(path, RasterParams(neighbours="subtract"), progress=False)
    ras, keep = xr.open_zarr(path, group="rasters"), xr.open_zarr(store, group="rasters")
    assert json.loads(ras.attrs["params"])["neighbours"] == "subtract"
    assert "neighbours" not in json.loads(keep.attrs["params"])  # older stores read the same
    m = ras["mask"].values
    np.testing.assert_allclose(ras["raster"].values[m].sum(axis=(1, 2)), 1.0, rtol=1e-5)
    # the stage's rasters are the kernel's on the store's own detections
    e, c = 1, 1
    s = np.flatnonzero(m[e, c])
    det = xr.open_zarr(path, group="detections").isel(exposure=e, chip=c)
    x, y, f, fl = (det[v].values for v in ("x", "y", "flux", "flags"))
    own = st.open_group(path, "catalog")["det_index"].values[e, c, s]
    want, ok = neighbour_free(xr.open_zarr(path, group="exposures")["image"].values[e, c], x, y, f,
                              modelled(x, y, f, fl), own, ras["corner"].values[e, c, s],
                              _detections_epsf(str(path), c)(e), 6)
    np.testing.assert_allclose(ras["raster"].values[e, c, s][ok], want[ok], rtol=1e-5, atol=1e-7)
    diff = np.abs(ras["raster"].values[m] - keep["raster"].values[m]).max(axis=(1, 2))
    assert (diff > 1e-4).any()  # some stars had neighbours' light in their rasters
