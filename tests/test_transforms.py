import numpy as np
import pytest

from starcenter.cubes.classical.transforms import apply, design, find_offset, fit_cubic


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


def test_standard_error_is_sqrt_of_sum_of_squares_over_n_minus_10_by_hand():
    """Residuals built orthogonal to the cubic design: the fit returns the injected
    transformation exactly and the standard error is sqrt(sum r^2 / (n - 10)), computed here by
    hand (n = 40 stars, 10 cubic terms per coordinate, no star culled)."""
    from starcenter.cubes.classical.transforms import N_TERMS

    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 799, (2, 40))
    A = design(x, y)
    proj = np.eye(40) - A @ np.linalg.pinv(A)  # onto the residual space of the design
    rx, ry = proj @ rng.normal(0, 0.010, 40), proj @ rng.normal(0, 0.020, 40)
    cx, cy = rng.normal(0, 1, (2, N_TERMS))
    X, Y = A @ cx + rx, A @ cy + ry
    fx, fy, used, sx, sy = fit_cubic(x, y, X, Y)
    assert used.all() and N_TERMS == 10
    np.testing.assert_allclose(fx, cx, atol=1e-9)
    by_hand_x = np.sqrt(sum(r * r for r in rx) / (40 - 10))
    by_hand_y = np.sqrt(sum(r * r for r in ry) / (40 - 10))
    assert sx == pytest.approx(by_hand_x, rel=1e-9) and sy == pytest.approx(by_hand_y, rel=1e-9)


def test_single_measurement_error_is_the_standard_error_over_sqrt_2():
    """Every exposure (and the reference) measures 500 stars with its own 10 mpix error per
    coordinate: the exposure -> reference standard error is sqrt(2) x 10 = 14.1 mpix, and the
    report's single-measurement conversion gives back 10 mpix."""
    from starcenter.evaluation.metrics import single_measurement_mpix, transforms_from_positions

    rng = np.random.default_rng(5)
    xy0 = rng.uniform(20, 780, (500, 2))
    shifts = rng.uniform(-2, 2, (12, 1, 1, 2))
    xy = xy0[None, None] + shifts + rng.normal(0, 0.010, (12, 1, 500, 2))
    se, off, n = transforms_from_positions(xy, reference=0)
    assert (n[1:] >= 490).all() and np.isfinite(se[1:]).all()
    np.testing.assert_allclose(se[1:] * 1e3, 10 * np.sqrt(2), rtol=0.1)
    np.testing.assert_allclose(off[1:, 0], (shifts[0] - shifts[1:])[:, 0, 0], atol=0.01)
    assert single_measurement_mpix(se[1:, 0, 0] * 1e3) == pytest.approx(10.0, rel=0.04)
    assert single_measurement_mpix([14.0, 14.2, 99.0]) == round(14.2 / np.sqrt(2), 2)
