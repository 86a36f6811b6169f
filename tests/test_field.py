import numpy as np
import pytest

from starcenter.cubes import constants as C
from starcenter.cubes.sim import field


@pytest.mark.parametrize("chip", C.CHIPS)
def test_chip_global_round_trip(chip):
    x, y = np.array([0.0, 400.0, 799.0]), np.array([10.0, 400.0, 790.0])
    u, v = field.chip_to_global(chip, x, y)
    x2, y2 = field.global_to_chip(chip, u, v)
    np.testing.assert_allclose([x2, y2], [x, y], atol=1e-9)
    # a pointing offset of +0.1" along u moves stars by -0.1" along u, which each camera sees
    # along its own axes (rotated by 0, 90, 180, 270 deg): worked out by hand, sign included
    step = 0.1 / C.PIXEL_SCALE[chip]
    expected = {"PC1": (-step, 0.0), "WF2": (0.0, step), "WF3": (step, 0.0), "WF4": (0.0, -step)}[chip]
    x3, y3 = field.global_to_chip(chip, u, v, offset=(0.1, 0.0))
    np.testing.assert_allclose(x3 - x, expected[0], atol=1e-9)
    np.testing.assert_allclose(y3 - y, expected[1], atol=1e-9)


def test_chip_central_thirds_do_not_overlap():
    # chips overlap only along their vignetted inner edges near the pyramid apex
    boxes = {}
    for chip in C.CHIPS:
        u, v = field.chip_to_global(chip, [267, 533, 267, 533], [267, 267, 533, 533])
        boxes[chip] = (u.min(), u.max(), v.min(), v.max())
    for a in C.CHIPS:
        for b in C.CHIPS:
            if a < b:
                A, B = boxes[a], boxes[b]
                overlap = min(A[1], B[1]) > max(A[0], B[0]) and min(A[3], B[3]) > max(A[2], B[2])
                assert not overlap, (a, b)


def test_luminosity_function():
    rng = np.random.default_rng(0)
    nat = field.sample_magnitudes(rng, 20000)
    bright = field.sample_magnitudes(rng, 20000, bright_enhanced=True)
    assert nat.min() >= field.MAG_RANGE[0] and nat.max() <= field.MAG_RANGE[1]
    # natural: most stars are faint; bright-enhanced: many more below V = 16.5
    assert np.mean(nat > 20) > 0.6
    assert np.mean(bright < 16.5) > 3 * np.mean(nat < 16.5)


def test_star_field_is_deterministic_and_chip_local():
    a = field.star_field(3, ["PC1", "WF3"], field.ClusterModel())
    b = field.star_field(3, ["PC1", "WF3"], field.ClusterModel())
    c = field.star_field(4, ["PC1", "WF3"], field.ClusterModel())
    np.testing.assert_array_equal(a["WF3"].u, b["WF3"].u)
    assert a["WF3"].u.size != c["WF3"].u.size or not np.array_equal(a["WF3"].u, c["WF3"].u)
    for chip, s in a.items():
        x, y = field.global_to_chip(chip, s.u, s.v)
        assert x.min() >= -field.MARGIN_PX and x.max() <= 799 + field.MARGIN_PX
        assert len(np.unique(s.star_id)) == s.star_id.size


def test_dithers_like_gilliland():
    d = field.gilliland_dithers(1, 200)
    r = np.hypot(d.offset_u, d.offset_v) / C.PIXEL_SCALE["PC1"]
    assert r[0] == 0 and d.roll_deg[0] == 0
    assert r.max() <= 2.0 + 1e-9
    # quasi-random sub-pixel coverage: every quarter of the WF pixel phase is populated
    phase = np.mod(d.offset_u / C.PIXEL_SCALE["WF3"], 1.0)
    counts = np.histogram(phase, bins=4, range=(0, 1))[0]
    assert counts.min() > 0.1 * len(phase)
    assert np.abs(d.roll_deg).max() < 0.01
