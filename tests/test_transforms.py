import numpy as np
import pytest

from cubes.transforms import apply, design, find_offset, fit_cubic


def test_fit_cubic_recovers_a_known_transformation_and_culls_outliers():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(270, 530, (2, 400))
    cx = np.array([1.3, 1.0001, 2e-4, 3e-5, -2e-5, 1e-5, 4e-6, 0, -3e-6, 1e-6]) * 399.5
    cx[0], cx[1] = 1.3, 399.5 * 1.0001
    cy = np.array([-0.7, -1e-4 * 399.5, 399.5 * 0.9999, 0, 1e-5, 0, 0, 2e-6, 0, 0])
    X, Y = apply(cx, cy, x, y)
    X = X + rng.normal(0, 0.01, x.size)
    Y = Y + rng.normal(0, 0.01, x.size)
    X[:10] += 0.5  # mismatched stars
    fx, fy, used, sx, sy = fit_cubic(x, y, X, Y)
    assert not used[:10].any() and used[10:].mean() > 0.98
    assert sx == pytest.approx(0.01, rel=0.15) and sy == pytest.approx(0.01, rel=0.15)
    px, py = apply(fx, fy, x, y)
    assert np.abs(px - apply(cx, cy, x, y)[0])[10:].max() < 0.01


def test_fit_cubic_with_too_few_stars_returns_nan():
    x = np.arange(8.0)
    cx, cy, used, sx, sy = fit_cubic(x, x, x, x)
    assert np.isnan(sx) and np.isnan(cx).all()


def test_design_is_normalized():
    A = design(np.array([0.0, 399.5, 799.0]), np.array([399.5, 399.5, 399.5]))
    np.testing.assert_allclose(A[:, 1], [-1, 0, 1])


@pytest.mark.parametrize("offset", [(0.3, -0.8), (7.3, -4.1)])
def test_find_offset_robust(offset):
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 300, (300, 2))
    tgt = ref - np.array(offset) + rng.normal(0, 0.02, ref.shape)
    tgt = np.concatenate([tgt[:250], rng.uniform(0, 300, (80, 2))])  # lost stars, false ones
    off = find_offset(ref, tgt, max_offset=10.0)
    np.testing.assert_allclose(off, offset, atol=0.02)


def test_find_offset_nothing_to_match():
    assert find_offset(np.zeros((0, 2)), np.ones((5, 2)), 5.0) is None
    assert find_offset(np.zeros((3, 2)), np.full((3, 2), 100.0), 5.0) is None
