"""The batched ePSF fitter against exact truth and against photutils' PSFPhotometry."""

import numpy as np
import pytest
from scipy.stats import chisquare

from starcenter.cubes.classical.psffit import FLAGS, fit_stars
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.evaluation.cramer_rao import position_bound
from starcenter.evaluation.truth import phase_profile, pixel_phase

from .helpers import GAIN, READ_NOISE, SKY_E, star_grid


@pytest.fixture(scope="module")
def psfs():
    # the data set's true focus is 5 um off the library (the demo's PSF epoch)
    return {chip: (get_epsf(PSFParams(chip, "F555W", 5.0)), get_epsf(PSFParams(chip, "F555W", 0.0)))
            for chip in ("PC1", "WF3")}


@pytest.fixture(scope="module")
def big_grids(psfs):
    return {chip: star_grid(true, n=60, seed=1) for chip, (true, _) in psfs.items()}


def _fit(img, x0, y0, epsf, **kw):
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    return fit_stars(img, ix, iy, epsf, GAIN, READ_NOISE, **kw)


@pytest.mark.parametrize("chip", ["PC1", "WF3"])
def test_true_epsf_errors_do_not_depend_on_pixel_phase(chip, psfs, big_grids):
    img, x0, y0, *_ = big_grids[chip]
    r = _fit(img, x0, y0, psfs[chip][0])
    assert np.all(r.flags == 0)
    for meas, truth in ((r.x, x0), (r.y, y0)):
        err = (meas - truth) * 1e3
        _, mean, count = phase_profile(pixel_phase(truth), err)
        # every phase bin's mean error is consistent with zero (4 standard errors)
        assert np.all(np.abs(mean) < 4 * err.std() / np.sqrt(count)), mean
        assert err.std() < 7.0  # mpix, near the Cramer-Rao bound for 2e4-8e4 e- stars
    h = np.histogram(pixel_phase(r.x), 10, (-0.5, 0.5))[0]
    assert chisquare(h).pvalue > 1e-3


@pytest.mark.parametrize("chip, min_amplitude", [("PC1", 5.0), ("WF3", 15.0)])
def test_library_epsf_reproduces_pixel_phase_bias(chip, min_amplitude, psfs, big_grids):
    img, x0, *_ = big_grids[chip]
    y0 = big_grids[chip][2]
    r = _fit(img, x0, y0, psfs[chip][1])
    err = (r.x - x0) * 1e3
    _, mean, count = phase_profile(pixel_phase(x0), err)
    assert mean.max() - mean.min() > min_amplitude  # mpix, the W/V curves' cause
    if chip == "WF3":  # the fractional-pixel histogram of fitted centres is non-uniform
        h = np.histogram(pixel_phase(r.x), 10, (-0.5, 0.5))[0]
        assert chisquare(h).pvalue < 1e-4


@pytest.mark.parametrize("chip", ["PC1", "WF3"])
def test_agrees_with_photutils_psfphotometry(chip, psfs):
    from astropy.table import Table
    from photutils.psf import PSFPhotometry

    true = psfs[chip][0]
    img, x0, y0, flux, expected = star_grid(true, n=12, seed=4)
    sky_dn = SKY_E / GAIN
    err = np.sqrt(expected + READ_NOISE**2) / GAIN
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    phot = PSFPhotometry(true.to_imagepsf(), (5, 5), aperture_radius=3)
    tab = phot(img - sky_dn, error=err, init_params=Table(
        {"x": ix.astype(float), "y": iy.astype(float), "flux": flux / GAIN}))
    px, py = np.asarray(tab["x_fit"]), np.asarray(tab["y_fit"])
    # same objective (fixed errors, known sky): same centres to << 2 mpix
    same = fit_stars(img - sky_dn, ix, iy, true, GAIN, READ_NOISE, sky=np.zeros(ix.size),
                     fit_sky=False, error=err)
    assert np.sqrt(np.mean((same.x - px) ** 2 + (same.y - py) ** 2)) * 1e3 < 2.0
    # starcenter's default (model-variance weights, sky fitted): precision within 10%
    ours = fit_stars(img, ix, iy, true, GAIN, READ_NOISE)
    rms_ours = np.sqrt(np.mean((ours.x - x0) ** 2 + (ours.y - y0) ** 2))
    rms_phot = np.sqrt(np.mean((px - x0) ** 2 + (py - y0) ** 2))
    assert rms_ours == pytest.approx(rms_phot, rel=0.10)


def test_quality_of_fit_and_magnitude(psfs):
    true, lib = psfs["WF3"]
    img, x0, y0, flux, _ = star_grid(true, n=10, seed=2)
    good = _fit(img, x0, y0, true)
    bad = _fit(img, x0, y0, lib)
    assert np.all((good.q > 1e-4) & (good.q < 0.05))
    assert np.median(bad.q) > 2 * np.median(good.q)  # a mismatched ePSF fits worse
    np.testing.assert_allclose(good.mag, -2.5 * np.log10(good.flux))
    assert np.median(good.flux * GAIN / flux) == pytest.approx(1.0, abs=0.02)


def test_saturated_edge_and_nan_boxes_are_flagged_not_nan(psfs):
    true = psfs["PC1"][0]
    img, x0, y0, *_ = star_grid(true, n=4, seed=3)
    img[int(round(y0[5])), int(round(x0[5]))] = np.nan
    ix = np.r_[np.rint(x0).astype(int), 0, 5]
    iy = np.r_[np.rint(y0).astype(int), 30, 40]
    sat = np.zeros(ix.size, bool)
    sat[-1] = True
    r = fit_stars(img, ix, iy, true, GAIN, READ_NOISE, saturated=sat)
    assert r.flags[5] & FLAGS["bad_pixels"] and np.isfinite(r.x[5])
    assert r.flags[-2] & FLAGS["edge"] and np.isfinite(r.x[-2])
    assert r.flags[-1] & FLAGS["saturated"] and r.q[-1] == 0 and r.x[-1] == 5
    assert np.all(np.isfinite(r.x) & np.isfinite(r.y))


def test_no_stars():
    r = fit_stars(np.zeros((20, 20)), [], [], get_epsf(PSFParams("WF3", "F555W")))
    assert r.x.size == 0


def test_fisher_uncertainties_cover_the_true_errors(psfs, big_grids):
    """With the true ePSF the Fisher sigma is the noise: |error| < sigma for ~68 % of the stars,
    < 2 sigma for ~95 %, and it is the Cramer-Rao bound of each star (its flux, sky and phase;
    evaluation.cramer_rao, written separately) within 10 %."""
    img, x0, y0, f, _ = big_grids["WF3"]
    r = _fit(img, x0, y0, psfs["WF3"][0])
    z = np.abs(np.r_[(r.x - x0) / r.x_err, (r.y - y0) / r.y_err])
    assert 0.63 < np.mean(z < 1) < 0.73 and 0.92 < np.mean(z < 2) < 0.98
    bx, by = position_bound(psfs["WF3"][0], f, SKY_E, READ_NOISE, x0 - np.rint(x0), y0 - np.rint(y0))
    assert np.all(np.abs(r.x_err / bx - 1) < 0.1) and np.all(np.abs(r.y_err / by - 1) < 0.1)
    assert np.all(r.flux_err > 0) and np.all(np.isfinite(r.flux_err))


def test_fisher_uncertainties_are_infinite_where_nothing_was_fitted(psfs):
    true = psfs["PC1"][0]
    img, x0, y0, *_ = star_grid(true, n=3, seed=3)
    ix, iy = np.rint(x0).astype(int), np.rint(y0).astype(int)
    sat = np.zeros(ix.size, bool)
    sat[0] = True
    r = fit_stars(img, ix, iy, true, GAIN, READ_NOISE, saturated=sat)
    assert np.isinf(r.x_err[0]) and np.isinf(r.y_err[0]) and np.isinf(r.flux_err[0])
    assert np.all(np.isfinite(r.x_err[1:]))
