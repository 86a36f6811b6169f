import numpy as np
import pytest

from starcenter.cubes.classical.psffit import fit_stars
from starcenter.cubes.sim.optics import PSFParams, get_epsf
from starcenter.evaluation.cramer_rao import phase_averaged_bound, position_bound

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
