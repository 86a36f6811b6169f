"""The physical-optics ePSF against TinyTim 7.5 (the reference WFPC2 PSF model)."""

import numpy as np
import pytest

from starcenter.cubes import constants as C
from starcenter.cubes.sim.optics import (
    PSFParams,
    band_sampling,
    cache_dir,
    get_epsf,
    zernike_coefficients,
)

from .conftest import shared_file

NORM_RADIUS = 8  # px: both PSFs normalized to the flux within 8 px (inside our edge taper)


def profile(stamp, c):
    yy, xx = np.indices(stamp.shape)
    r = np.hypot(xx - c, yy - c)
    stamp = stamp / stamp[r <= NORM_RADIUS].sum()
    return stamp[c, c], {R: stamp[r <= R].sum() for R in (1, 2, 3, 5)}


@pytest.mark.parametrize("chip", C.CHIPS)
@pytest.mark.parametrize("filt", ["F555W", "F814W"])
def test_agrees_with_tinytim(chip, filt):
    from astropy.io import fits

    path = shared_file("data", "tinytim", "tinytim75_wfpc2_G5V_psfs.fits")
    with fits.open(path) as hdul:
        tt = hdul[f"{chip}_{filt}_X1"].data[2].astype(float)  # chip centre (400, 400)
    c = tt.shape[0] // 2
    tt = tt[c - 12:c + 13, c - 12:c + 13]
    ours = get_epsf(PSFParams(chip, filt)).pixel_stamp(0, 0, half=12)
    peak_t, ee_t = profile(tt, 12)
    peak_o, ee_o = profile(ours, 12)
    assert peak_o == pytest.approx(peak_t, rel=0.10)
    for R in ee_t:
        assert ee_o[R] == pytest.approx(ee_t[R], rel=0.10), R


def test_despace_to_focus_conversion():
    z = zernike_coefficients(PSFParams("PC1", "F555W", despace_um=4.0))
    z0 = zernike_coefficients(PSFParams("PC1", "F555W", despace_um=0.0))
    assert (z[3] - z0[3]) / C.ZERNIKE_WAVELENGTH_M == pytest.approx(4 * 0.0125)


def test_defocus_lowers_pc_peak():
    # PC1 is near nominal focus at its centre: despace either way broadens the core, more so
    # the farther (not symmetrically: the chip's spherical aberration Z11 shifts best focus)
    peaks = {d: float(get_epsf(PSFParams("PC1", "F555W", despace_um=d)).evaluate(0, 0))
             for d in (-16.0, -8.0, 0.0, 8.0, 16.0)}
    assert peaks[0.0] > peaks[8.0] > peaks[16.0]
    assert peaks[0.0] > peaks[-8.0] > peaks[-16.0]


def test_field_position_changes_psf():
    a = get_epsf(PSFParams("WF3", "F555W", position=(100.0, 100.0)))
    b = get_epsf(PSFParams("WF3", "F555W", position=(700.0, 700.0)))
    assert np.abs(a.data - b.data).max() > 1e-3


def test_band_sampling():
    lam, w = band_sampling("F555W")
    assert w.sum() == pytest.approx(1.0)
    assert 480e-9 < lam.min() and lam.max() < 610e-9


def test_cache_hit_returns_identical_epsf():
    p = PSFParams("WF3", "F814W", despace_um=1.5)
    a = get_epsf(p)
    files = list(cache_dir().glob(f"WF3_F814W_{p.key()}.fits"))
    assert len(files) == 1
    b = get_epsf(p)
    np.testing.assert_array_equal(a.data, b.data)


def test_corrupt_cache_entry_is_recomputed():
    p = PSFParams("PC1", "F814W", despace_um=-2.0)
    a = get_epsf(p)
    path = cache_dir() / f"PC1_F814W_{p.key()}.fits"
    path.write_bytes(b"not a fits file")
    b = get_epsf(p)
    np.testing.assert_allclose(a.data, b.data)


def test_pixelate_intrapixel_response():
    """A uniform pixel response is the plain box; one more sensitive at the pixel centre (Lauer 1999)
    puts more of a pixel-centred star in its peak pixel."""
    from starcenter.cubes.sim.optics import FINE, pixelate

    n = 12 * FINE + 1
    yy, xx = (np.indices((n, n)) - (n - 1) / 2) / FINE
    psf = np.exp(-(xx**2 + yy**2) / (2 * 0.45**2))  # an undersampled core (sigma 0.45 px)
    psf /= psf.sum()

    box = pixelate(psf, 4)
    np.testing.assert_allclose(box.data, pixelate(psf, 4, sensitivity=lambda u: np.ones_like(u)).data,
                               atol=1e-15)
    centred = pixelate(psf, 4, sensitivity=lambda u: 1 - 0.5 * (2 * u) ** 2)
    peak = [e.pixel_stamp(0, 0, half=2)[2, 2] for e in (box, centred)]
    assert peak[1] > peak[0] * 1.02
