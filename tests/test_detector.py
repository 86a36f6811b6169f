import numpy as np
import pytest

from starcenter.cubes import constants as C
from starcenter.cubes.sim import detector


def test_pixel_variance_follows_gain_and_read_noise():
    rng = np.random.default_rng(11)
    gain, rn = 7.12, 5.24
    flat = np.ones((400, 400))
    for level in (0.0, 50.0, 800.0):
        e = rng.poisson(np.full(flat.shape, level)).astype(float)
        raw, _ = detector.readout(rng, e, gain, rn, flat, dark_e=0.0)
        dn = detector.calibrate(raw, gain, flat, dark_e=0.0)
        expected = (level + rn**2) / gain**2 + 1 / 12  # Poisson + read noise + quantisation
        assert dn.mean() == pytest.approx(level / gain, abs=0.02 + 0.002 * level / gain)
        assert dn.var() == pytest.approx(expected, rel=0.03)


def test_bleeding_conserves_charge_and_caps_full_well():
    img = np.zeros((200, 50))
    img[100, 25] = 40 * C.FULL_WELL_E
    img[101, 25] = 3 * C.FULL_WELL_E
    img[100, 26] = 1.5 * C.FULL_WELL_E
    out, touched = detector.bleed(img)
    assert out.sum() == pytest.approx(img.sum(), rel=1e-12)
    assert out.max() <= C.FULL_WELL_E * (1 + 1e-12)
    # charge went along the column only
    assert np.all(out[:, :25] == 0) and np.all(out[:, 27:] == 0)
    assert touched[:, 25].sum() >= 43 and touched[:, 26].sum() >= 2


def test_bleeding_off_the_chip_edge_loses_charge():
    img = np.zeros((20, 3))
    img[1, 1] = 100 * C.FULL_WELL_E
    out, _ = detector.bleed(img)
    assert out.sum() < img.sum()  # half of the walk ran off row 0
    assert out[0, 1] == pytest.approx(C.FULL_WELL_E) and out.max() <= C.FULL_WELL_E * (1 + 1e-12)


def test_ad_saturation_flagged():
    rng = np.random.default_rng(0)
    e = np.array([[10.0, 1e5, 5e4]])
    raw, sat = detector.readout(rng, e, 7.0, 5.0, np.ones_like(e), 0.0)
    assert raw.max() == C.AD_SATURATION_DN
    assert sat.tolist() == [[False, True, True]]


def test_render_conserves_flux(tmp_path):
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    e = get_epsf(PSFParams("WF3", "F555W"))
    for flux in (1e3, 5e4, 1e6):  # one per render tier
        img = detector.render_stars((80, 80), [40.3], [39.8], [flux], e)
        hw = detector._half_width(np.array([flux]), e.radius)[0]
        frac = e.pixel_stamp(0.3, -0.2, half=hw).sum()
        assert img.sum() == pytest.approx(flux * frac, rel=1e-6)  # up to clipped undershoot
        assert frac > 0.94  # the faint tier's box truncates < 6% of the flux, < 0.1 e-/px
        assert img.min() >= 0


def test_render_star_off_the_edge_partially():
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    e = get_epsf(PSFParams("PC1", "F555W"))
    img = detector.render_stars((50, 50), [-0.4, 70.0], [25.0, 25.0], [1e5, 1e5], e)
    assert 0.2e5 < img.sum() < 0.6e5  # half of the first star, none of the second


def test_cosmic_rays_deposit_positive_charge():
    rng = np.random.default_rng(5)
    cr = detector.cosmic_rays(rng, (800, 800), 160.0)
    assert cr.min() == 0 and 100 < (cr > 0).sum() < 2000


def test_flat_field_is_smooth_and_near_one():
    f = detector.flat_field("WF3")
    assert 0.9 < f.mean() < 1.01 and f.min() > 0.9
    with pytest.raises(ValueError):
        f[0, 0] = 2.0  # the cached flat is read-only
