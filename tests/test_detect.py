"""Detection on awkward chips: empty, NaN, edges, blends, saturated stars with bleed trails."""

import numpy as np
import pytest

from starcenter.cubes import constants as C
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.sim import detector
from starcenter.cubes.sim.optics import PSFParams, get_epsf

SHAPE = (200, 200)


@pytest.fixture(scope="module")
def epsf():
    return get_epsf(PSFParams("WF3", "F555W"))


def observe(expected_e, seed=0, saturate=True):
    rng = np.random.default_rng(seed)
    e = rng.poisson(expected_e).astype(float)
    e, bled = detector.bleed(e)
    raw, sat = detector.readout(rng, e, 7.0, 5.0, np.ones(e.shape), 0.0)
    dq = np.zeros(e.shape, np.uint16)
    dq[sat] |= C.DQ_FLAGS["ad_saturation"]
    dq[bled] |= C.DQ_FLAGS["bleeding"]
    return detector.calibrate(raw, 7.0, np.ones(e.shape), 0.0), dq


def test_empty_chip_gives_no_detection(epsf):
    """Sky alone at 5 sigma: nothing, with or without the ePSF wing test; the same noise with
    one faint star (~10 sigma peak) added: exactly that star, so the empty result is not a
    detector that finds nothing."""
    img, dq = observe(np.full(SHAPE, 10.0))
    assert len(find_peaks(img, dq, 7.0, 5.0, epsf=epsf)) == 0
    assert len(find_peaks(img, dq, 7.0, 5.0)) == 0
    star = detector.render_stars(SHAPE, [120.3], [60.8], [1500.0], epsf)
    img2, dq2 = observe(np.full(SHAPE, 10.0) + star)
    pk = find_peaks(img2, dq2, 7.0, 5.0, epsf=epsf)
    assert len(pk) == 1 and (pk.x[0], pk.y[0]) == (120, 61)


def test_nan_chip_gives_no_detection_and_no_crash():
    pk = find_peaks(np.full(SHAPE, np.nan), None, 7.0, 5.0)
    assert len(pk) == 0


def test_partly_nan_chip_never_detects_nan_pixels(epsf):
    exp = detector.render_stars(SHAPE, [50.2, 150.0], [50.0, 150.3], [5e4, 5e4], epsf) + 10
    img, dq = observe(exp)
    img[100:, :] = np.nan
    pk = find_peaks(img, dq, 7.0, 5.0, epsf=epsf)
    assert len(pk) == 1 and pk.y[0] == 50 and np.isfinite(pk.sky).all()


def test_stars_at_the_edge(epsf):
    exp = detector.render_stars(SHAPE, [0.3, 100.0, 199.2], [100.0, 1.0, 120.0], [5e4] * 3, epsf) + 10
    img, dq = observe(exp)
    pk = find_peaks(img, dq, 7.0, 5.0, border=0, epsf=epsf)
    assert len(pk) == 3
    assert len(find_peaks(img, dq, 7.0, 5.0, border=2, epsf=epsf)) == 1  # the default border drops the 2


def test_blended_pair_resolved_or_merged_by_min_separation(epsf):
    exp = detector.render_stars(SHAPE, [100.0, 103.0], [100.0, 100.0], [5e4, 3e4], epsf) + 10
    img, dq = observe(exp)
    assert len(find_peaks(img, dq, 7.0, 5.0, min_separation=2.0, epsf=epsf)) == 2
    assert len(find_peaks(img, dq, 7.0, 5.0, min_separation=4.0, epsf=epsf)) == 1


def test_saturated_star_with_bleed_trail_is_one_flagged_detection(epsf):
    exp = detector.render_stars(SHAPE, [100.0, 40.0], [100.0, 40.0], [5e7, 5e4], epsf) + 10
    img, dq = observe(exp)
    assert (dq & C.DQ_FLAGS["bleeding"]).any()
    pk = find_peaks(img, dq, 7.0, 5.0, epsf=epsf)
    sat = pk.saturated
    assert sat.sum() == 1 and abs(pk.x[sat][0] - 100) <= 1
    # the saturated star's halo may show a few spurious maxima but never on its bleed column
    assert not np.any((np.abs(pk.x[~sat] - 100) <= 1) & (np.abs(pk.y[~sat] - 100) < 60))
    assert np.any((pk.x == 40) & (pk.y == 40))


def test_saturation_without_dq_uses_a_level(epsf):
    exp = detector.render_stars(SHAPE, [100.0], [100.0], [5e6], epsf) + 10
    img, _ = observe(exp)
    pk = find_peaks(img, None, 7.0, 5.0, saturation_dn=3500, epsf=epsf)
    assert pk.saturated.sum() == 1


def test_flagged_pixels_are_left_out_of_the_fit(epsf):
    """A cosmic-ray hit (+600 DN, dq 'cosmic_ray') 2 px from a star, inside its fit box: with
    the dq the fit ignores it and the star is centred to noise; without the dq it drags the star."""
    from starcenter.cubes.classical.psffit import FLAGS
    from starcenter.cubes.params import DetectParams
    from starcenter.cubes.stages.detections import detect_chunk

    exp = detector.render_stars(SHAPE, [100.3], [60.7], [3e4], epsf) + 10
    img, dq = observe(exp, saturate=False)
    img[63, 102] += 600.0
    dq[63, 102] |= C.DQ_FLAGS["cosmic_ray"]
    err = {}
    for name, d in (("with dq", dq), ("without", None)):
        det = detect_chunk(img, d, epsf, 7.0, 5.0, DetectParams("library"))
        near = np.hypot(det["x"] - 100.3, det["y"] - 60.7) < 1.5
        assert near.sum() == 1
        err[name] = float(np.hypot(det["x"][near] - 100.3, det["y"][near] - 60.7)[0])
        assert bool(det["flags"][near][0] & FLAGS["bad_pixels"]) == (d is not None)
    assert err["with dq"] < 0.01 and err["without"] > 2 * err["with dq"], err  # px: 5 and 17 mpix
