import numpy as np
import pytest

from starcenter.cubes.classical.psffit import fit_stars
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.evaluation.cramer_rao import error_over_bound, phase_averaged_bound, position_bound

from .helpers import GAIN, READ_NOISE, SKY_E, star_grid


@pytest.fixture(scope="module")
def wf3():
    return get_epsf(PSFParams("WF3", "F555W", 5.0))


def test_bound_scales_as_one_over_root_flux_at_high_snr(wf3):
    s = phase_averaged_bound(wf3, [1e5, 4e5], sky=10.0, read_noise=5.0)
    assert s[0] / s[1] == pytest.approx(2.0, rel=0.05)
    s = phase_averaged_bound(wf3, [1e3, 1e4], sky=10.0, read_noise=5.0)
    assert s[0] / s[1] > np.sqrt(10)  # background-limited faint end degrades faster


def test_batched_fitter_reaches_the_bound(wf3):
    """x, y, flux, sky fitted on 5x5 with the true ePSF: measured variance / bound^2 ~ 1."""
    img, x0, y0, flux, _ = star_grid(wf3, n=40, seed=9)
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    r = fit_stars(img, ix, iy, wf3, GAIN, READ_NOISE)
    bx, by = position_bound(wf3, flux, SKY_E, READ_NOISE, x0 - ix, y0 - iy)
    ratio_x = np.mean((r.x - x0) ** 2) / np.mean(bx**2)
    ratio_y = np.mean((r.y - y0) ** 2) / np.mean(by**2)
    assert 0.8 < ratio_x < 1.25 and 0.8 < ratio_y < 1.25, (ratio_x, ratio_y)


def test_a_mixture_of_epsfs_has_the_bound_of_its_weighted_sum(wf3):
    """The simulator's field-varying ePSF is a per-star weighted sum of node ePSFs; the bound of
    the mixture is the bound of that sum (value and gradients are linear in the ePSF)."""
    from starcenter.cubes.classical.epsf import EffectivePSF

    other = get_epsf(PSFParams("WF3", "F555W", -8.0))
    flux, px, py = np.array([3e3, 3e4, 3e4]), np.array([0.1, -0.4, 0.3]), np.array([0.0, 0.2, -0.25])
    w = np.array([[0.3, 1.0, 0.0], [0.7, 0.0, 1.0]])
    bx, by = position_bound([wf3, other], flux, SKY_E, READ_NOISE, px, py, weights=w)
    for i in range(3):
        alone = EffectivePSF.interpolate([wf3, other], list(w[:, i]))
        ax, ay = position_bound(alone, flux[i], SKY_E, READ_NOISE, px[i], py[i])
        assert (bx[i], by[i]) == pytest.approx((float(ax), float(ay)), rel=1e-9)
    assert bx[1] != pytest.approx(bx[2], rel=0.01)  # the two ePSFs do differ
    with pytest.raises(ValueError, match="one row per ePSF"):
        position_bound([wf3, other], flux, SKY_E, READ_NOISE, px, py, weights=w[:, :2])


def test_star_bounds_follow_each_stars_exposure_focus_and_place_on_the_chip(tmp_path):
    """SIMULATION: a star's bound is that of the ePSF the simulator drew it with (its exposure's
    focus, its place between the field nodes), not the chip centre's."""
    import dask
    import xarray as xr

    from starcenter.cubes.classical.epsf import EffectivePSF
    from starcenter.cubes.sim.simulate import make_config, simulate
    from starcenter.cubes.sim.truepsf import chip_psfs
    from starcenter.evaluation.truth import star_bounds

    cfg = make_config("demo", n_exposures=2, chips=("WF3",), breathing_um=0.5, field_varying=True, seed=3)
    path = tmp_path / "fv.zarr"
    with dask.config.set(scheduler="synchronous"):
        simulate(path, cfg, progress=False)
    focus = xr.open_zarr(path, group="exposures")["focus"].values + cfg.chip_focus("WF3")
    psfs = chip_psfs("WF3", cfg)  # the simulator's own nodes, not the store's copy
    exposure, x, y = np.array([1, 1, 0]), np.array([100.3, 250.0, 100.3]), np.array([700.2, 250.0, 700.2])
    bx, by = star_bounds(path, "WF3", exposure, x, y, np.full(3, 3e4), SKY_E, READ_NOISE)

    def bound(epsf, i):
        b = position_bound(epsf, 3e4, SKY_E, READ_NOISE, x[i] - np.round(x[i]), y[i] - np.round(y[i]))
        return tuple(float(v) for v in b)

    grid1 = psfs.for_exposure(focus[1])  # (field_y, field_x)
    assert (bx[0], by[0]) == pytest.approx(bound(grid1[2, 0], 0), rel=1e-3)  # x 100, y 700; float32 nodes
    assert bx[0] != pytest.approx(bound(grid1[0, 2], 0)[0], rel=0.005)  # x and y swapped differ
    between = EffectivePSF.interpolate(list(grid1[:2, :2].ravel()), [0.25] * 4)  # halfway: 100 .. 400
    assert (bx[1], by[1]) == pytest.approx(bound(between, 1), rel=1e-3)
    assert (bx[2], by[2]) == pytest.approx(bound(psfs.for_exposure(focus[0])[2, 0], 2), rel=1e-3)


def efficient_errors(n: int = 100_000, spread: float = 0.3, seed: int = 3):
    """(errors, bounds) of an estimator at the bound, stars 3e4..1e5 e- whose bounds also spread
    ``spread`` (log) with phase and place (arbitrary unit)."""
    rng = np.random.default_rng(seed)
    bound = np.exp(rng.uniform(np.log(3e4), np.log(1e5), n)) ** -0.5 * np.exp(spread * rng.standard_normal(n))
    return bound * rng.standard_normal(n), bound


def test_error_over_bound_is_one_at_the_bound_whatever_the_spread_of_the_bounds():
    from starcenter.cubes.classical.stats import robust_sigma

    err, bound = efficient_errors()
    assert abs(error_over_bound(err, bound) - 1) < 0.02
    assert abs(error_over_bound(1.3 * err, bound) - 1.3) < 0.03
    assert robust_sigma(err) / np.sqrt(np.mean(bound**2)) < 0.9  # the pooled ratio reads low
    with pytest.raises(ValueError, match="errors but"):
        error_over_bound(err, bound[:-1])
