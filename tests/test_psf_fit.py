"""The psf stage's fitted PSF epoch (SIMULATION): the focus kernel, the stage on a tiny set, the
fitted ePSF in detect, flagged exposures, and focus sweeps in the simulator."""

import shutil

import dask
import numpy as np
import pytest
import xarray as xr

from starcenter.cubes.classical import focus as F
from starcenter.cubes.lookup import chip_epsfs
from starcenter.cubes.params import DetectParams, PSFFitParams

from .conftest import FIT_GRID, derive_store

#: A coarse grid around the tiny set's true focus (+5 um), chip-centre model (the tiny set has no
#: field variation): 5 coarse + 4 fine ePSFs per chip to compute.
GRID = FIT_GRID


def test_vertex_of_a_parabola():
    f = np.arange(-5.0, 6.0)
    best, err, red, status = F.vertex(f, 4.0 * (f - 1.3) ** 2 + 100, n_dof=100)
    # Delta chi^2 = 1 at 0.5 um, inflated by sqrt(reduced chi^2) = sqrt(1.0036), with the floor
    assert status == F.STATUS["ok"] and best == pytest.approx(1.3)
    assert err == pytest.approx(np.hypot(0.5 * np.sqrt(1.0036), F.SYSTEMATIC_UM), rel=1e-3)
    assert F.vertex(f, (f - 9) ** 2, 10)[3] == F.STATUS["outside_grid"]  # minimum at the last node
    # an interior lowest node but no parabola opening upwards through its neighbours
    assert F.vertex(np.arange(-2.0, 3.0), np.array([10, 13, 9, 13.5, 10.0]), 10)[3] == F.STATUS["no_minimum"]


def test_fine_nodes_and_interpolation():
    assert F.fine_nodes(3.1, 0.5, 1.5).tolist() == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    from starcenter.cubes.classical.epsf import EffectivePSF

    a, b = EffectivePSF(np.zeros((9, 9)) + 1.0), EffectivePSF(np.zeros((9, 9)) + 3.0)
    assert F.interpolate(np.array([0.0, 1.0]), [a, b], 0.25).data[0, 0] == pytest.approx(1.5)


def test_saturated_only_field_has_no_focus_stars():
    """Bad input: every star saturated (A/D flagged) leaves no star to fit; the fit is flagged."""
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    img = np.full((200, 200), 20.0)
    dq = np.zeros(img.shape, np.uint16)
    for x, y in [(50, 50), (120, 80), (160, 150)]:
        img[y - 1:y + 2, x - 1:x + 2] = 4000.0
        dq[y - 1:y + 2, x - 1:x + 2] = 8
    lib = get_epsf(PSFParams("WF3", "F555W"))
    stars = F.select_stars(img, dq, 7.0, 5.0, lib)
    assert len(stars) == 0
    fit = F.fit_focus(img, stars, GRID.grid(), lambda f: lib, 7.0, 5.0)
    assert fit.status == F.STATUS["too_few_stars"] and np.isnan(fit.focus)


def test_psf_stage_recovers_the_true_focus(fitted_store, tiny_config):
    fit = xr.open_zarr(fitted_store, group="psf_fit")
    assert fit.attrs["complete"] == 1
    assert (fit["status"].values == 0).all() and (fit["n_stars"].values >= 30).all()
    # SIMULATION: true focus +5 um on every exposure; the fit is within 0.3 um
    np.testing.assert_allclose(fit["focus"].values, tiny_config.focus_um, atol=0.3)
    assert (fit["focus_err"].values > 0).all() and (fit["focus_err"].values < 0.3).all()
    nodes = fit["focus_node"].values
    assert nodes.min() <= fit["focus"].values.min() and nodes.max() >= fit["focus"].values.max()


def test_psf_stage_resumes_and_refits_on_request(fitted_store):
    from starcenter.cubes.stages.psf_fit import fit_psf

    with dask.config.set(scheduler="synchronous"):
        assert fit_psf(fitted_store, GRID, progress=False)["written"] == 0


def test_fitted_epsf_centres_better_than_the_library(fitted_store, tiny_store, tmp_path):
    """SIMULATION (+5 um epoch), WF3, isolated 1e4-1e5 e- stars against exact truth: the library's
    pixel-phase bias (measured: 32 mpix peak to peak in x) is gone with the fitted ePSF (1.2 mpix,
    as the true ePSF), and the robust error drops from 20 to 5 mpix. (The rms of a crowded chip
    is set by a few blended stars, the same for every ePSF.)"""
    from starcenter.cubes.classical.stats import robust_sigma
    from starcenter.evaluation.truth import match_to_truth, pixel_phase

    library = derive_store(tiny_store, tmp_path, "library", catalog=False)

    def errors(store):
        d, ph = [], []
        for e in range(3):
            m = match_to_truth(store, e, "WF3")
            ok = m.well_measured(1e4, 1e5, central=False)
            d.append(m.dx[ok])
            ph.append(pixel_phase(m.x_true[ok]))
        d, ph = np.concatenate(d), np.concatenate(ph)
        edges = np.linspace(-0.5, 0.5, 6)
        med = [np.median(d[(ph >= a) & (ph < b)]) for a, b in zip(edges[:-1], edges[1:])]
        return 1e3 * robust_sigma(d), 1e3 * np.ptp(med)

    (fit_sigma, fit_bias), (lib_sigma, lib_bias) = errors(fitted_store), errors(library)
    assert lib_bias > 15 and fit_bias < 5, (lib_bias, fit_bias)
    assert fit_sigma < 0.5 * lib_sigma, (fit_sigma, lib_sigma)


def test_flagged_exposures_use_the_library(tiny_store, tmp_path, capsys):
    """Too few usable stars (min_stars above what a chip has): every (exposure, chip) is flagged,
    the reason printed, and detect --psf fitted falls back to the library ePSF."""
    from starcenter.cubes.stages.psf_fit import fit_psf

    path = tmp_path / "flag.zarr"
    shutil.copytree(tiny_store, path)
    with dask.config.set(scheduler="synchronous"):
        out = fit_psf(path, PSFFitParams(min_stars=5000, max_stars=5000, grid_min=0.0, grid_max=10.0, field="off"))
    fit = xr.open_zarr(path, group="psf_fit")
    assert (fit["status"].values == F.STATUS["too_few_stars"]).all() and np.isnan(fit["focus"].values).all()
    assert out["chips"]["WF3"]["flagged"] == {0: "too_few_stars", 1: "too_few_stars", 2: "too_few_stars"}
    assert "flagged (too few stars" in capsys.readouterr().out
    _, fitted = chip_epsfs(path, DetectParams("fitted"))
    _, library = chip_epsfs(path, DetectParams("library"))
    np.testing.assert_allclose(fitted["PC1"](1).data, library["PC1"](1).data, atol=1e-12)


def test_detect_fitted_without_a_fit_says_what_to_run(tiny_store, tmp_path):
    from starcenter.cubes.errors import StoreMismatchError

    path = tmp_path / "nofit.zarr"
    shutil.copytree(tiny_store, path)
    with pytest.raises(StoreMismatchError, match="psf STORE --fit focus"):
        chip_epsfs(path, DetectParams("fitted"))


def test_focus_sweep_in_the_simulator():
    from starcenter.cubes.sim.simulate import exposure_focus, make_config

    cfg = make_config("demo", n_exposures=40, focus_sweep_um=(-10, 15), focus_sweep_range=True, seed=3)
    f = exposure_focus(cfg)
    assert f.min() >= -10 and f.max() <= 15 and f.std() > 5
    np.testing.assert_array_equal(f, exposure_focus(cfg))  # deterministic under the seed
    nodes = cfg.epoch.nodes()
    assert nodes[0] <= -10 and nodes[-1] >= 15 and np.allclose(np.diff(nodes), 1.0)
    listed = make_config("demo", n_exposures=30, focus_sweep_um=(-2, 3.5, 8), breathing_um=0.5, seed=3)
    assert set(np.round(exposure_focus(listed) - 0.5 * np.sin(0), 0)) <= set(range(-3, 10))
    assert set(np.unique(np.round(exposure_focus(make_config("demo", n_exposures=30, focus_sweep_um=(-2, 3.5, 8))),
                                  6))) == {-2.0, 3.5, 8.0}
    assert -2.5 in listed.epoch.nodes() and 8.5 in listed.epoch.nodes()
    # a store simulated before sweeps existed keeps its provenance
    assert "focus_sweep_um" not in make_config("demo").to_json()


def test_field_epsf_groups_and_fits():
    """A FieldEPSF whose nodes are all one ePSF fits exactly as that ePSF; its quadrants partition
    the stars; a star's ePSF is its node's at a node and bilinear between nodes (clamped)."""
    from starcenter.cubes.classical.epsf import EffectivePSF
    from starcenter.cubes.classical.fieldpsf import FieldEPSF, fit_grouped
    from starcenter.cubes.classical.psffit import fit_stars
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    lib = get_epsf(PSFParams("WF3", "F555W"))
    flat = FieldEPSF(lambda f, j, k: lib, 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(20, 780, 200), rng.uniform(20, 780, 200)
    groups = flat.groups(x, y)
    assert sorted(np.concatenate(list(groups.values()))) == list(range(200)) and len(groups) == 4
    img = np.full((800, 800), 10.0) + rng.normal(0, 1, (800, 800))
    ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    sat = np.zeros(200, bool)
    sat[::7] = True  # per-star arguments, positional or not, follow their stars into the groups
    a = fit_grouped(img, ix, iy, flat, 7.0, 5.0, sat, sky=np.full(200, 10.0))
    b = fit_stars(img, ix, iy, lib, 7.0, 5.0, sat, sky=np.full(200, 10.0))
    np.testing.assert_allclose(a.x, b.x)
    np.testing.assert_allclose(a.flux, b.flux)
    np.testing.assert_array_equal(a.flags, b.flags)

    marks = {(j, k): EffectivePSF(lib.data * (1 + 0.1 * (3 * j + k)), 4) for j in range(3) for k in range(3)}
    varying = FieldEPSF(lambda f, j, k: marks[j, k], 0.0)
    dx = np.zeros(3)
    xs, ys = np.array([10.0, 400.0, 550.0]), np.array([10.0, 400.0, 250.0])
    values = []
    for q, idx in varying.groups(xs, ys).items():
        values += list(zip(idx, varying.for_stars(q, xs[idx], ys[idx]).evaluate(dx[idx], dx[idx])))
    v = dict(values)
    assert v[0] == pytest.approx(marks[0, 0].evaluate(0.0, 0.0))  # clamped to the (100, 100) node
    assert v[1] == pytest.approx(marks[1, 1].evaluate(0.0, 0.0))  # on the centre node
    # (550, 250): halfway between x nodes 400 and 700 and y nodes 100 and 400
    mid = np.mean([marks[j, k].evaluate(0.0, 0.0) for j in (0, 1) for k in (1, 2)])
    assert v[2] == pytest.approx(mid)
    # evaluate_at: the same per-star values on stamps of offsets, in the stars' order
    from starcenter.cubes.classical.fieldpsf import evaluate_at

    grid = np.zeros((3, 5, 5))
    at = evaluate_at(varying, xs, ys, grid, grid)
    assert at.shape == (3, 5, 5) and [at[i, 0, 0] for i in range(3)] == pytest.approx([v[0], v[1], v[2]])
    np.testing.assert_array_equal(evaluate_at(lib, xs, ys, grid, grid), lib.evaluate(grid, grid))


def test_detect_with_a_field_epsf_of_one_psf_is_detect_with_that_psf(tiny_store):
    """detect_chunk takes a FieldEPSF (each star fitted in its cell), neighbour passes included."""
    from starcenter.cubes.classical.fieldpsf import FieldEPSF
    from starcenter.cubes.stages.detections import detect_chunk

    ex = xr.open_zarr(tiny_store, group="exposures")
    _, lib = chip_epsfs(tiny_store, DetectParams("library"))
    epsf = lib["WF3"](0)
    image, dq = ex["image"].values[0, 1], ex["dq"].values[0, 1]
    params = DetectParams(neighbour_passes=1)
    a = detect_chunk(image, dq, FieldEPSF(lambda f, j, k: epsf, 0.0), 7.0, 5.0, params)
    b = detect_chunk(image, dq, epsf, 7.0, 5.0, params)
    np.testing.assert_allclose(a["x"], b["x"], atol=1e-9)
    np.testing.assert_array_equal(a["flags"], b["flags"])


def test_simulate_like_recovers_a_simulated_store(fitted_store, tiny_config):
    """SIMULATION: --like of the tiny set (density 16 stars/arcsec^2, sky 6 e-/s/arcsec^2, +5 um)
    finds its density to 10 %, its sky to 3 e-/s/arcsec^2 and its focus to 0.3 um."""
    from starcenter.cubes.sim.like import like_config

    cfg, m = like_config(fitted_store, field_varying=False)
    assert cfg.chips == tiny_config.chips and cfg.filter == tiny_config.filter
    assert cfg.density == pytest.approx(tiny_config.density, rel=0.10)
    assert cfg.sky == pytest.approx(tiny_config.sky, abs=3.0)
    for chip, focus in cfg.chip_focus_um:
        assert focus == pytest.approx(tiny_config.focus_um, abs=0.3), chip
    assert not cfg.cosmic_rays and cfg.n_exposures == 3
    from starcenter.commands import like_lines  # what `simulate --like` prints (it once raised KeyError)

    lines = like_lines(fitted_store, cfg, m)
    assert len(lines) == len(cfg.chips) + 1 and all(f" {c}: sky " in t for c, t in zip(cfg.chips, lines))


def test_simulate_like_needs_a_fitted_focus(tiny_store):
    from starcenter.cubes.errors import StoreMismatchError
    from starcenter.cubes.sim.like import like_config

    with pytest.raises(StoreMismatchError, match="run `starcenter psf STORE --fit focus`"):
        like_config(tiny_store)


def test_stdpsf_library(tmp_path):
    """Anderson's STDPSF format (photutils' test mock of the WFPC2 F814W file): each chip's
    centre ePSF on the schema's grid; another filter, a missing file or a non-STDPSF FITS refused."""
    from starcenter.cubes.archive.stdpsf import read_stdpsf, stdpsf_filter
    from starcenter.cubes.errors import BadInputError

    from .conftest import shared_file

    path = shared_file("data", "real", "STDPSF_WFPC2_F814W_mock.fits")
    assert stdpsf_filter(path) == "F814W"
    for chip in ("PC1", "WF2", "WF3", "WF4"):
        e = read_stdpsf(path, chip, "F814W")
        assert e.data.shape == (101, 101) and e.data[50, 50] == e.data.max() > 0  # centred
    with pytest.raises(BadInputError, match="library for F814W, the store's exposures are F555W"):
        read_stdpsf(path, "WF3", "F555W")
    with pytest.raises(BadInputError, match="no such STDPSF file"):
        read_stdpsf(tmp_path / "none.fits", "WF3")
    with pytest.raises(BadInputError, match="not a WFPC2 STDPSF ePSF library"):
        read_stdpsf(shared_file("data", "real", "WFPC2u5780205r_c0fx.fits"), "WF3")


def test_a_focus_outside_the_grid_is_flagged_not_guessed(tiny_store):
    """Bad input: the data's PSF lies beyond the searched grid (a model family blurred further
    from the truth at every node): the fit says so (outside_grid) and gives no focus."""
    from scipy.ndimage import gaussian_filter

    from starcenter.cubes.classical.epsf import EffectivePSF

    ex = xr.open_zarr(tiny_store, group="exposures")
    _, true = chip_epsfs(tiny_store, DetectParams("true"))
    sharp = true["WF3"](0)

    def blurred(f):
        return EffectivePSF(gaussian_filter(sharp.data, 0.5 * f), 4).normalized()

    image, dq = ex["image"].values[0, 1], ex["dq"].values[0, 1]
    stars = F.select_stars(image, dq, 7.0, 5.0, sharp)
    fit = F.fit_focus(image, stars, np.arange(1.0, 6.0), blurred, 7.0, 5.0)
    assert fit.status == F.STATUS["outside_grid"] and np.isnan(fit.focus) and fit.n_stars >= 30


def test_a_coarse_minimum_at_the_grid_end_is_refined_inside_the_grid(tiny_store):
    """The coarse search uses the chip-centre ePSF; where that puts the minimum at the grid's end
    but the field-dependent model has it inside, the refinement finds it there (SIMULATION +17 um
    despace on WF3, grid to +20: 11 of 24 exposures were flagged before); a minimum the refinement
    also puts at the end stays flagged. Synthetic families: the data's sharp ePSF blurred by the
    distance to a family's own best focus."""
    from scipy.ndimage import gaussian_filter

    from starcenter.cubes.classical.epsf import EffectivePSF

    ex = xr.open_zarr(tiny_store, group="exposures")
    _, true = chip_epsfs(tiny_store, DetectParams("true"))
    sharp = true["WF3"](0)

    def family(best):
        return lambda f, *node: EffectivePSF(gaussian_filter(sharp.data, 0.5 * abs(f - best)), 4).normalized()

    image, dq = ex["image"].values[0, 1], ex["dq"].values[0, 1]
    stars = F.select_stars(image, dq, 7.0, 5.0, sharp)
    grid = np.arange(0.0, 5.0)  # coarse family best at 6: beyond the grid's end (4)
    fit = F.fit_focus(image, stars, grid, family(6.0), 7.0, 5.0, field_at=family(2.6))
    assert fit.status == F.STATUS["ok"] and abs(fit.focus - 2.6) < 0.3, fit
    fit = F.fit_focus(image, stars, grid, family(6.0), 7.0, 5.0, field_at=family(4.5))
    assert fit.status == F.STATUS["outside_grid"] and np.isnan(fit.focus), fit
    fit = F.fit_focus(image, stars, grid, family(6.0), 7.0, 5.0)  # no field model: flagged as before
    assert fit.status == F.STATUS["outside_grid"], fit


def test_a_wrong_side_coarse_minimum_is_searched_again_with_the_field_model(tiny_store):
    """The chip-centre coarse profile can have two near-equal minima, the lower on the wrong side
    (SIMULATION, WF2 at +9..+13 um: 3 of 128 exposures flagged); when the refinement from it fails,
    the coarse search is redone with the field-dependent model. Synthetic families as above: the
    chip-centre family has wells at 1 and 7 um, the field model's best focus is 7.3 um."""
    from scipy.ndimage import gaussian_filter

    from starcenter.cubes.classical.epsf import EffectivePSF

    ex = xr.open_zarr(tiny_store, group="exposures")
    _, true = chip_epsfs(tiny_store, DetectParams("true"))
    sharp = true["WF3"](0)

    def blurred(sigma):  # the data prefer sigma ~0.55 (oversampled px) to the sharp ePSF
        return EffectivePSF(gaussian_filter(sharp.data, sigma), 4).normalized()

    def centre(f):
        return blurred(0.55 + 1.5 * min(abs(f - 1.0), abs(f - 7.0) + 0.13))  # 1 um lower, by < 1 %

    image, dq = ex["image"].values[0, 1], ex["dq"].values[0, 1]
    stars = F.select_stars(image, dq, 7.0, 5.0, sharp)
    grid = np.arange(0.0, 10.0)
    field = lambda f, *node: blurred(0.55 + 1.5 * abs(f - 7.3))  # noqa: E731
    fit = F.fit_focus(image, stars, grid, centre, 7.0, 5.0, field_at=field)
    assert fit.status == F.STATUS["ok"] and abs(fit.focus - 7.3) < 0.3, fit
    fit = F.fit_focus(image, stars, grid, centre, 7.0, 5.0)  # no field model: the chip-centre minimum
    assert fit.status == F.STATUS["ok"] and abs(fit.focus - 1.0) < 0.3, fit


def test_only_an_ambiguous_coarse_profile_is_searched_again():
    """The field-dependent coarse search costs ~200 model ePSFs per chip: it runs only where the
    chip-centre profile has two interior minima within AMBIGUOUS (REAL DATA omega Cen's flagged WF
    chips have one each, and a fresh machine would compute them all for nothing)."""
    assert F._two_minima([5.0, 1.0, 3.0, 1.03, 4.0])
    assert not F._two_minima([5.0, 1.0, 3.0, 1.2, 4.0])
    assert not F._two_minima([5.0, 1.0, 2.0, 3.0, 0.5])  # the lowest at the grid's end is no interior minimum


def test_a_refinement_window_that_goes_back_and_forth_fits_around_the_lowest_node(monkeypatch):
    """Two near-equal nodes, each the lowest of the other's window (the usable stars differ between
    windows; SIMULATION, WF4 at +6.3 um): the fit takes the 3 nodes around the lowest of all nodes
    instead of flagging the exposure. Chi-square and star selection are stand-ins here."""
    stars = F.FocusStars(*(np.zeros(40) for _ in range(4)))
    a = np.arange(40) < 20  # stars whose chi-square is lowest at 7 um; the others' at 6 um
    monkeypatch.setattr(F, "chi2_profile", lambda image, st, epsfs, *args: np.array(
        [45.0 + np.where(a, (f - 7.0) ** 2, (f - 6.0) ** 2) for f in epsfs]))
    monkeypatch.setattr(F, "usable", lambda chi2: a if len(chi2) == 3 and chi2[0, 0] == 45.0 + 4.0 else ~a | (
        len(chi2) > 3))  # the window 5..7 keeps the first group only, the window 6..8 the second only
    keep = np.ones(40, bool)
    best, _, _, status, _ = F._refine(None, stars, keep, 5.0, lambda f: f, 7.0, 5.0, 1.0, 1.0, None)
    assert status == F.STATUS["ok"] and 6.0 <= best <= 7.0, (best, status)


def test_focus_and_diffusion_recover_the_nominal_diffusion(tiny_store, tmp_path):
    """SIMULATION (the model's own charge diffusion, +5 um): fit focus+diffusion finds d ~ 0 and
    the same focus; detect --psf fitted then uses the fitted diffusion."""
    from starcenter.cubes.stages.psf_fit import fit_psf

    path = tmp_path / "diff.zarr"
    shutil.copytree(tiny_store, path)
    params = PSFFitParams("focus+diffusion", grid_min=0.0, grid_max=10.0, field="off")
    with dask.config.set(scheduler="synchronous"):
        fit_psf(path, params, progress=False)
    fit = xr.open_zarr(path, group="psf_fit")
    d, err = fit["diffusion"].values, fit["diffusion_err"].values
    assert np.all(np.abs(d) < 0.15) and np.all((err > 0) & (err < 0.15)), (d, err)
    np.testing.assert_allclose(fit["focus"].values, 5.0, atol=0.3)
    _, fitted = chip_epsfs(path, DetectParams("fitted"))
    e = fitted["WF3"](0)
    assert e.data.shape == (101, 101) and F.diffuse(e, 0.0) is e
    assert F.diffuse(e, 1.0).data.max() < e.data.max()  # more diffusion, a lower peak


def test_crowding_cut_applies_to_the_fitted_epsf(fitted_store, tiny_store, tmp_path, monkeypatch):
    """Detections with each exposure's fitted ePSF get the stacked-residual crowding cut (on a
    focus sweep one catalog ePSF cannot serve it), library detections do not; the tiny set's 3
    exposures stand in for the 20 the cut asks for (too few to measure a stack: the figures are
    benchmarks/bench_uncertainty.py --second-iteration's)."""
    from starcenter.cubes.params import RasterParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.stages import selection

    monkeypatch.setattr(selection, "STACK_MIN_EXPOSURES", 2)
    cut = {}
    for name, src in (("fitted", fitted_store), ("library", derive_store(tiny_store, tmp_path, "library", False))):
        path = tmp_path / f"cut-{name}.zarr"
        shutil.copytree(src, path)
        with dask.config.set(scheduler="synchronous"):
            run_catalog(path, raster_params=RasterParams(max_stack_residual=0.0), progress=False)
        cut[name] = selection.stack_cut(str(path), RasterParams(), progress=False)
    assert callable(cut["fitted"]) and cut["library"] is None


def test_the_stack_leaves_out_exposures_whose_psf_fit_was_flagged(fitted_store, tmp_path, monkeypatch):
    """An exposure whose PSF-epoch fit was flagged is detected with the library ePSF; its residuals
    would swamp every star's stack (a -15..+20 um sweep lost 90 % of its PC1 rasters), so the
    stack of that chip leaves it out, and a chip left with too few exposures gets no cut at all."""
    import zarr

    from starcenter.cubes.params import RasterParams
    from starcenter.cubes.pipeline import run_catalog
    from starcenter.cubes.stages import selection

    path = tmp_path / "flagged.zarr"
    shutil.copytree(fitted_store, path)
    with dask.config.set(scheduler="synchronous"):
        run_catalog(path, raster_params=RasterParams(max_stack_residual=0.0), progress=False)
    focus = zarr.open_group(str(path), mode="r+")["psf_fit/focus"]
    values = focus[...]
    values[1, 0] = np.nan  # exposure 1's fit flagged on the first chip only
    focus[...] = values
    seen = {}

    def spy(path, c, stars, epsf_for, gain, rn, exposures, progress=False):
        seen[c] = sorted(int(e) for e in exposures)
        return np.zeros(len(stars)), np.zeros(len(stars))

    monkeypatch.setattr(selection, "stacked_residual", spy)
    monkeypatch.setattr(selection, "STACK_MIN_EXPOSURES", 2)
    cut = selection.stack_cut(str(path), RasterParams(), progress=False)
    stars = np.arange(4)
    assert cut(0, stars) is not None and cut(1, stars) is not None
    assert seen[0] == [0, 2] and seen[1] == [0, 1, 2], seen
    monkeypatch.setattr(selection, "STACK_MIN_EXPOSURES", 3)
    cut = selection.stack_cut(str(path), RasterParams(), progress=False)
    assert cut(0, stars) is None and cut(1, stars) is not None
