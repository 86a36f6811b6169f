"""The PSF epoch of one chip image: its focus, fitted to its own bright stars (kernels on arrays).

hst1pass meets a PSF that differs from its library with focus-diverse libraries (``FOCUS=``) and
a per-exposure perturbation (``PERT=``). Here the physical model's secondary-mirror despace (one
Z4 offset per chip) is fitted jointly with every star's x, y, flux and sky: for each ePSF of a
focus grid the stars are fitted (:func:`~starcenter.cubes.classical.psffit.fit_stars` on 7x7
boxes) and their chi-square summed; the profile chi-square against focus is a parabola near its
minimum, whose vertex is the fitted focus and whose curvature gives its uncertainty
(Delta chi^2 = 1, inflated by the reduced chi-square when it exceeds 1).

The stars are the bright, unsaturated, isolated ones (:func:`select_stars`); a star whose best
reduced chi-square is far above the others' (a neighbour, a cosmic ray) is left out of the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.fieldpsf import FieldEPSF
from starcenter.cubes.classical.peaks import find_peaks
from starcenter.cubes.classical.psffit import FLAGS, cut_boxes, fit_stars

#: Box half-size (px) of the focus fit: 7x7 pixels, so the wings that focus moves are seen.
HALF = 3
#: Stars (the brightest) of the coarse search for the minimum.
COARSE_STARS = 100
#: Systematic error (um) added in quadrature to the statistical one: the rms error of the fitted
#: focus against the truth on the sweep benchmark (SIMULATION, field-dependent model, 0.07 um),
#: where the statistical errors are 0.01-0.04 um. On real data the model's own error adds to it.
SYSTEMATIC_UM = 0.07
#: Status codes of a focus fit (stored with each estimate).
STATUS = {"ok": 0, "too_few_stars": 1, "outside_grid": 2, "no_minimum": 3}


def status_reasons(codes) -> str:
    """The reasons of focus-fit status ``codes`` in words, each once ("outside grid, too few stars")."""
    names = {v: k.replace("_", " ") for k, v in STATUS.items()}
    return ", ".join(sorted({names.get(int(c), f"status {int(c)}") for c in np.atleast_1d(codes)}))


@dataclass
class FocusStars:
    """Peak pixels (px) of the stars chosen for the focus fit and their peak S/N."""

    ix: np.ndarray
    iy: np.ndarray
    snr: np.ndarray
    sky: np.ndarray

    def __len__(self) -> int:
        return int(self.ix.size)


@dataclass
class FocusFit:
    """A fitted focus (um) with its 1-sigma uncertainty (um), the stars used, the reduced
    chi-square at the minimum and a STATUS code; focus is NaN unless status is ok."""

    focus: float
    error: float
    n_stars: int
    chi2_red: float
    status: int
    #: with fit "focus+diffusion": the charge-diffusion perturbation (:func:`diffuse`) and its error
    diffusion: float = float("nan")
    diffusion_error: float = float("nan")


def select_stars(image, dq, gain: float, read_noise: float, epsf: EffectivePSF,
                 saturation_dn: float | None = None, min_snr: float = 30.0,
                 isolation_px: float = 5.0, max_stars: int = 300) -> FocusStars:
    """The bright, unsaturated, isolated stars of a chip image, brightest first.

    A star's peak stands ``min_snr`` sigma above the local sky, no other detection (5 sigma) lies
    within ``isolation_px`` px, its 7x7 box lies on the chip with no flagged pixel; at most
    ``max_stars`` are kept.
    """
    img = np.asarray(image, float)
    pk = find_peaks(img, dq, gain, read_noise, 5.0, 2.0, saturation_dn=saturation_dn, epsf=epsf)
    if len(pk) == 0:
        return FocusStars(*(np.zeros(0, int),) * 2, np.zeros(0), np.zeros(0))
    snr = pk.height / np.maximum(pk.noise, 1e-12)
    ok = ~pk.saturated & (snr >= min_snr)
    ny, nx = img.shape
    m = HALF + 1
    ok &= (pk.x >= m) & (pk.x < nx - m) & (pk.y >= m) & (pk.y < ny - m)
    if len(pk) > 1:
        d, _ = cKDTree(np.column_stack([pk.x, pk.y])).query(np.column_stack([pk.x, pk.y]), k=2)
        ok &= d[:, 1] > isolation_px
    idx = np.flatnonzero(ok)
    if idx.size:
        box = cut_boxes(img, pk.x[idx], pk.y[idx], HALF)[0]
        clean = np.isfinite(box).all(axis=(1, 2))
        if dq is not None:
            flagged = cut_boxes(np.asarray(dq, float), pk.x[idx], pk.y[idx], HALF)[0]
            clean &= (np.nan_to_num(flagged, nan=1) == 0).all(axis=(1, 2))
        idx = idx[clean]
    idx = idx[np.argsort(-snr[idx], kind="stable")][:max_stars]
    return FocusStars(pk.x[idx], pk.y[idx], snr[idx], pk.sky[idx])


def chi2_profile(image, stars: FocusStars, epsfs, gain: float, read_noise: float) -> np.ndarray:
    """chi-square (n_epsfs, n_stars) of every star fitted (x, y, flux, sky on 7x7) with each ePSF
    (an EffectivePSF, or a FieldEPSF whose ePSF follows the star's place on the chip).

    Variance per pixel: read noise plus the Poisson noise of the fitted model (DN^2); a star whose
    fit failed gets inf.
    """
    img = np.asarray(image, float)
    out = np.full((len(epsfs), len(stars)), np.inf)
    for i, e in enumerate(epsfs):
        groups = e.groups(stars.ix, stars.iy) if isinstance(e, FieldEPSF) else {0.0: np.arange(len(stars))}
        for q, idx in groups.items():
            ix, iy = stars.ix[idx], stars.iy[idx]
            psf = e.for_stars(q, ix, iy) if isinstance(e, FieldEPSF) else e
            # 1e-4 px is far below what moves a star's chi-square: 3x fewer iterations than detect's
            fit = fit_stars(img, ix, iy, psf, gain, read_noise, sky=stars.sky[idx], half=HALF, tol=1e-4, max_iter=10)
            model = fit.flux[:, None, None] * psf.box(ix - fit.x, iy - fit.y, HALF)[0] + fit.sky[:, None, None]
            var = (np.clip(model, 0, None) * gain + read_noise**2) / gain**2
            chi2 = ((cut_boxes(img, ix, iy, HALF)[0] - model) ** 2 / var).sum(axis=(1, 2))
            bad = (fit.flags & (FLAGS["nonpositive_flux"] | FLAGS["moved"])) != 0
            out[i, idx] = np.where(bad | ~np.isfinite(chi2), np.inf, chi2)
    return out


def usable(chi2: np.ndarray, outlier: float = 3.0) -> np.ndarray:
    """Stars (bool, n_stars) fitted at every node whose best reduced chi-square is at most
    ``outlier`` times the median of the others' (neighbours and cosmic rays are left out)."""
    best = chi2.min(axis=0) / ((2 * HALF + 1) ** 2 - 4)
    ok = np.isfinite(chi2).all(axis=0)
    if not ok.any():
        return ok
    return ok & (best <= outlier * max(np.median(best[ok]), 1.0))


def vertex(focus: np.ndarray, total: np.ndarray, n_dof: int, points: int = 5, floor: float | None = None):
    """(focus, 1-sigma error, reduced chi-square, status) of the parabola through the ``points``
    lowest-chi-square nodes around the minimum of ``total`` (chi-square summed over stars); the
    error includes ``floor`` in quadrature (default SYSTEMATIC_UM, the focus fit's)."""
    i0 = int(np.argmin(total))
    if i0 in (0, len(focus) - 1):
        return np.nan, np.nan, float(total[i0] / max(n_dof, 1)), STATUS["outside_grid"]
    lo = max(0, min(i0 - points // 2, len(focus) - points))
    sl = slice(lo, lo + points)
    f0 = focus[i0]
    a, b, _ = np.polyfit(focus[sl] - f0, total[sl], 2)
    red = float(total[i0] / max(n_dof, 1))
    if not a > 0:
        return np.nan, np.nan, red, STATUS["no_minimum"]
    best = f0 - b / (2 * a)
    if not focus[sl][0] <= best <= focus[sl][-1]:
        return np.nan, np.nan, red, STATUS["no_minimum"]
    error = np.hypot(np.sqrt(max(red, 1.0) / a), SYSTEMATIC_UM if floor is None else floor)
    return float(best), float(error), red, STATUS["ok"]


def fit_focus(image, stars: FocusStars, grid: np.ndarray, epsf_at, gain: float, read_noise: float,
              min_stars: int = 30, fine_step: float = 1.0, fine_half: float = 1.0, field_at=None) -> FocusFit:
    """The focus (um) of one chip image from its ``stars``.

    Parameters
    ----------
    image : numpy.ndarray
        Calibrated chip image (DN).
    stars : FocusStars
        From :func:`select_stars`.
    grid : numpy.ndarray
        Coarse focus nodes (um, increasing) searched for the minimum.
    epsf_at : callable
        ``focus (um) -> EffectivePSF`` of the physical model (cached).
    gain, read_noise : float
        e-/DN, e-.
    min_stars : int
        Fewest usable stars; fewer gives status too_few_stars.
    fine_step, fine_half : float
        The minimum is refined on nodes ``fine_step`` um apart (a lattice shared by all
        exposures) within ``fine_half`` um of the coarse vertex (3 nodes by default: measured on
        the sweep benchmark, 0.07 um rms against 0.11-0.15 with 5 nodes over +-2 um, where the
        profile is no longer a parabola).
    field_at : callable, optional
        ``(focus um, j, k) -> EffectivePSF``: the model's ePSF at field node (j, k) (y, x) of
        :data:`FIELD_NODES`; the refinement then fits every star with the ePSF of its place on
        the chip (:class:`FieldEPSF`), so the result is the secondary-mirror despace rather than
        a chip-averaged focus. The coarse search uses the chip-centre ePSF ``epsf_at``.

    Returns
    -------
    FocusFit
    """
    grid = np.asarray(grid, float)
    if len(stars) < min_stars:
        return FocusFit(np.nan, np.nan, len(stars), np.nan, STATUS["too_few_stars"])
    # the coarse search brackets the minimum with the brightest COARSE_STARS (measured: the same
    # bracket as with 300 stars on the sweep benchmark, at a third of the cost)
    bright = FocusStars(*(a[:COARSE_STARS] for a in (stars.ix, stars.iy, stars.snr, stars.sky)))
    chi2 = chi2_profile(image, bright, [epsf_at(f) for f in grid], gain, read_noise)
    ok = np.isfinite(chi2).all(axis=0)
    n_dof = int(ok.sum()) * ((2 * HALF + 1) ** 2 - 4) - 1
    total = chi2[:, ok].sum(axis=1)
    f0, _, red, status = vertex(grid, total, n_dof)
    bounds = (-np.inf, np.inf)
    if status == STATUS["outside_grid"]:
        if field_at is None:
            return FocusFit(np.nan, np.nan, len(stars), red, status)
        # the coarse search's chip-centre ePSF can put the minimum at the grid's end although the
        # field-dependent fit has it inside (SIMULATION, WF3 at +17.5..+18 um despace, grid to +20:
        # coarse minimum at +20, refined 17.5-17.9 um at chi2_red ~4): refine inside the grid and
        # flag only a refined minimum at its end
        bounds = (float(grid[0]), float(grid[-1]))
        f0 = bounds[1] - fine_half if np.argmin(total) else bounds[0] + fine_half
    elif status == STATUS["no_minimum"]:  # not a parabola over 5 coarse nodes: start at the lowest
        f0 = float(grid[np.argmin(total)])
    keep = np.ones(len(stars), bool)
    best, err, red, status, n = _refine(image, stars, keep, f0, epsf_at, gain, read_noise, fine_step,
                                        fine_half, field_at, bounds=bounds)
    if status != STATUS["ok"] and field_at is not None and _two_minima(total):
        # the chip-centre coarse profile can have two near-equal minima, the lower one on the wrong
        # side (SIMULATION, WF2 at +9..+13 um despace: 2.5 and 15 um within 2 % of each other, 3 of
        # 128 exposures flagged); the field-dependent one has a single minimum at the right node (10,
        # 10, 12.5 um). Only then: it needs the model at every lattice node of the grid (~200 ePSFs
        # per chip to compute once; REAL DATA omega Cen's flagged WF chips have one minimum each).
        f1 = _field_start(image, bright, grid, field_at, fine_step, fine_half, gain, read_noise)
        retry = _refine(image, stars, keep, f1, epsf_at, gain, read_noise, fine_step, fine_half, field_at,
                        bounds=(float(grid[0]), float(grid[-1])))
        if retry[3] == STATUS["ok"]:
            best, err, red, status, n = retry
    if n < min_stars:
        return FocusFit(np.nan, np.nan, n, red, STATUS["too_few_stars"])
    return FocusFit(best, err, n, red, status)


#: Two interior minima of a coarse chi-square profile within this fraction of each other: ambiguous.
AMBIGUOUS = 0.05


def _two_minima(total: np.ndarray) -> bool:
    """Whether the coarse profile ``total`` has two interior local minima within AMBIGUOUS."""
    t = np.asarray(total, float)
    mins = np.sort([t[i] for i in range(1, len(t) - 1) if t[i] < t[i - 1] and t[i] < t[i + 1]])
    return len(mins) >= 2 and mins[1] <= (1 + AMBIGUOUS) * mins[0]


def _field_start(image, bright: FocusStars, grid, field_at, step: float, half: float, gain: float,
                 read_noise: float) -> float:
    """Where to refine from: the lowest node of the coarse profile with every star's field-dependent
    ePSF (:class:`FieldEPSF`, on the ``step``-um lattice), kept ``half`` um inside the grid."""
    chi2 = chi2_profile(image, bright, [FieldEPSF(field_at, f, step) for f in grid], gain, read_noise)
    ok = np.isfinite(chi2).all(axis=0)
    f1 = float(grid[np.argmin(chi2[:, ok].sum(axis=1))])
    return float(np.clip(f1, grid[0] + half, grid[-1] - half))


def _refine(image, stars, keep, centre, epsf_at, gain, read_noise, step, half, field_at, shifts: int = 4,
            bounds=(-np.inf, np.inf)):
    """The vertex on the fine lattice around ``centre``; the window moves towards the minimum
    while the lowest node is at its edge (an asymmetric coarse profile), at most ``shifts`` times,
    never past ``bounds`` (um): a minimum at a bound is outside_grid."""
    rows: dict[float, np.ndarray] = {}  # chi-square per node, kept while the window moves
    for _ in range(shifts + 1):
        fine = fine_nodes(centre, step, half)
        new = [f for f in fine if f not in rows]
        epsfs = [epsf_at(f) if field_at is None else FieldEPSF(field_at, f, step) for f in new]
        rows.update(zip(new, chi2_profile(image, stars, epsfs, gain, read_noise)))
        chi2 = np.stack([rows[f] for f in fine])
        use = keep & usable(chi2)
        total = chi2[:, use].sum(axis=1)
        i = int(np.argmin(total))
        if 0 < i < len(fine) - 1 or not bounds[0] < fine[i] < bounds[1]:
            break
        centre = fine[i]
    else:
        # the window went back and forth between two near-equal nodes (SIMULATION, WF4 at +6.3 um:
        # 6 and 7 um within 1e-4, each the lowest of one window): the 3 nodes around the lowest of all
        fine = np.array(sorted(rows))
        chi2 = np.stack([rows[f] for f in fine])
        use = keep & usable(chi2)
        total = chi2[:, use].sum(axis=1)
        i = int(np.clip(np.argmin(total), 1, len(fine) - 2))
        fine, total = fine[i - 1:i + 2], total[i - 1:i + 2]
    n = int(use.sum())
    n_dof = n * ((2 * HALF + 1) ** 2 - 4) - 1
    for points in (len(fine), 5, 3):  # fewer nodes where the profile is not a parabola that wide
        best, err, red, status = vertex(fine, total, n_dof, points=points)
        if status != STATUS["no_minimum"]:
            break
    return best, err, red, status, n


def fine_nodes(centre: float, step: float = 0.5, half: float = 1.5) -> np.ndarray:
    """Nodes of the ``step`` um lattice within ``half`` um of ``centre`` (rounded to 1e-6)."""
    k0 = np.round(centre / step)
    k = np.arange(k0 - np.round(half / step), k0 + np.round(half / step) + 1)
    return np.round(k * step, 6)


def interpolate(grid: np.ndarray, epsfs, focus: float) -> EffectivePSF:
    """The ePSF at ``focus`` (um), linear between the two nearest nodes of ``grid`` (sorted)."""
    grid = np.asarray(grid, float)
    if len(grid) == 1:
        return epsfs[0]
    i = int(np.clip(np.searchsorted(grid, focus) - 1, 0, len(grid) - 2))
    t = float(np.clip((focus - grid[i]) / (grid[i + 1] - grid[i]), 0, 1))
    return EffectivePSF.interpolate([epsfs[i], epsfs[i + 1]], [1 - t, t])


#: Diffusion perturbations searched (0: the model's nominal charge-diffusion kernel).
DIFFUSION_GRID = (-0.6, -0.3, 0.0, 0.3, 0.6, 0.9)


def diffuse(epsf: EffectivePSF, d: float) -> EffectivePSF:
    """The ePSF convolved with delta + d (K - delta), K the detector's charge-diffusion kernel
    (constants.CHARGE_DIFFUSION, one-pixel taps): d = 0 leaves it, d > 0 diffuses more (d = 1
    applies the kernel a second time), d < 0 less (to first order)."""
    from scipy.ndimage import convolve

    from starcenter.cubes import constants as C

    if d == 0:
        return epsf
    os_ = epsf.oversampling
    kern = np.zeros((2 * os_ + 1,) * 2)
    kern[::os_, ::os_] = d * C.CHARGE_DIFFUSION
    kern[os_, os_] += 1 - d
    return EffectivePSF(convolve(epsf.data, kern, mode="constant"), os_).normalized()


def fit_diffusion(image, stars: FocusStars, focus: float, epsf_at, gain: float, read_noise: float,
                  step: float = 1.0, field_at=None) -> tuple[float, float]:
    """The charge-diffusion perturbation d (:func:`diffuse`) and its 1-sigma error at the fitted
    ``focus`` (um): chi-square of the stars over DIFFUSION_GRID, parabola vertex (NaN, NaN when
    the minimum is outside the grid)."""
    from starcenter.cubes.classical.fieldpsf import lattice_epsf

    epsfs = []
    for d in DIFFUSION_GRID:
        if field_at is None:
            epsfs.append(diffuse(lattice_epsf(epsf_at, focus, step), d))
        else:
            epsfs.append(FieldEPSF(lambda f, j, k, d=d: diffuse(field_at(f, j, k), d), focus, step))
    chi2 = chi2_profile(image, stars, epsfs, gain, read_noise)
    use = usable(chi2)
    n_dof = int(use.sum()) * ((2 * HALF + 1) ** 2 - 4) - 1
    best, err, _, status = vertex(np.array(DIFFUSION_GRID), chi2[:, use].sum(axis=1), n_dof, floor=0.0)
    return (best, err) if status == STATUS["ok"] else (float("nan"), float("nan"))
