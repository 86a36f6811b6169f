"""Simulate a dithered WFPC2 data set into a store: the psf, truth and exposures groups.

The paper's in-house simulator (section 4.1), rebuilt on physical optics: a 47 Tuc-like field,
Gilliland-like sub-pixel dithers, a true ePSF whose focus differs from the library ePSF, and a
WFPC2 detector (gain, read noise, sky, dark, Poisson noise, bleeding, A/D saturation, bias/dark/
flat calibration; optional cosmic rays and the parallel CTE of :mod:`..cte`). Writing is lazy and
per (exposure, chip) chunk; each chunk's random numbers depend only on (seed, exposure, chip), so
the result is bit-identical whatever the number of workers, and a rerun skips chunks already written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import cte, driver, schema
from starcenter.cubes.sim import detector
from starcenter.cubes.sim.config import (  # noqa: F401  (the config's names, re-exported)
    GILLILAND_START_MJD,
    ORBIT_DAYS,
    PRESETS,
    SimulationConfig,
    make_config,
)
from starcenter.cubes.sim.field import (
    ClusterModel,
    Dithers,
    gilliland_dithers,
    global_to_chip,
    star_field,
)
from starcenter.cubes.sim.truepsf import ChipPSFs, chip_psfs, field_weights, precompute_psfs, psf_dataset

# ---------------------------------------------------------------------------------------------
# One (exposure, chip) chunk


@dataclass
class ChipContext:
    """Everything needed to simulate any exposure of one chip (shipped once to workers)."""

    chip: str
    config: SimulationConfig
    psfs: ChipPSFs
    u: np.ndarray
    v: np.ndarray
    flux: np.ndarray  # e- per exposure
    dithers: Dithers
    focus_um: np.ndarray  # per exposure


def exposure_focus(config: SimulationConfig) -> np.ndarray:
    """Per-exposure focus (um): the epoch offset (or a value drawn from the focus sweep) plus
    sinusoidal orbital breathing; a chip adds its ``chip_focus`` offset."""
    t = config.start_mjd + config.cadence_days * np.arange(config.n_exposures)
    base = config.focus_um
    if config.focus_sweep_um:
        rng = np.random.default_rng([config.seed, 0xF0C5])
        sweep = np.array(config.focus_sweep_um)
        base = (rng.uniform(sweep.min(), sweep.max(), config.n_exposures) if config.focus_sweep_range
                else rng.choice(sweep, config.n_exposures))
    return base + config.breathing_um * np.sin(2 * np.pi * t / ORBIT_DAYS)


def true_positions(ctx: ChipContext, exposure: int):
    """True (x, y) chip pixels of the chip's stars in ``exposure``."""
    d = ctx.dithers
    return global_to_chip(ctx.chip, ctx.u, ctx.v, (d.offset_u[exposure], d.offset_v[exposure]),
                          d.roll_deg[exposure])


def simulate_chunk(ctx: ChipContext, exposure: int):
    """Simulate one calibrated chip image. Returns (image DN float32, dq uint16, x, y)."""
    cfg = ctx.config
    chip = ctx.chip
    rng = np.random.default_rng([cfg.seed, exposure, C.DETECTOR_NUMBER[chip]])
    shape = (C.CHIP_SIZE, C.CHIP_SIZE)
    x, y = true_positions(ctx, exposure)
    scale = C.PIXEL_SCALE[chip]
    expected = np.full(shape, cfg.sky * cfg.exptime * scale**2)
    psf_grid = ctx.psfs.for_exposure(ctx.focus_um[exposure])
    wy = field_weights(y, ctx.psfs.field)
    wx = field_weights(x, ctx.psfs.field)
    for j in range(wy.shape[0]):
        for k in range(wx.shape[0]):
            w = wy[j] * wx[k]
            sel = w > 0
            detector.render_stars(shape, x[sel], y[sel], ctx.flux[sel] * w[sel],
                                  psf_grid[j, k], out=expected)
    electrons = rng.poisson(expected).astype(float)
    dq = np.zeros(shape, np.uint16)
    if cfg.cosmic_rays:
        cr = detector.cosmic_rays(rng, shape, cfg.exptime)
        electrons += cr
        dq[cr > 0] |= C.DQ_FLAGS["cosmic_ray"]
    electrons, bled = detector.bleed(electrons)
    dq[bled] |= C.DQ_FLAGS["bleeding"]
    if cfg.cti:  # WFPC2's parallel CTE on the exposure's date (after bleeding, as the charge is read)
        electrons = cte.readout(electrons, cfg.start_mjd + cfg.cadence_days * exposure)
    gain = C.GAIN[cfg.atodgain][chip]
    dark_e = C.DARK_RATE * cfg.exptime
    raw, sat = detector.readout(rng, electrons, gain, C.READ_NOISE[cfg.atodgain][chip],
                                detector.flat_field(chip), dark_e)
    dq[sat] |= C.DQ_FLAGS["ad_saturation"]
    image = detector.calibrate(raw, gain, detector.flat_field(chip), dark_e).astype(np.float32)
    return image, dq, x, y


def star_flux(mag: np.ndarray, config: SimulationConfig) -> np.ndarray:
    """Total e- per exposure of stars of V (or I) magnitude ``mag``."""
    return config.exptime * 10 ** (-0.4 * (np.asarray(mag) - C.ZERO_POINT_E[config.filter]))


# ---------------------------------------------------------------------------------------------
# Writing a store

PROVENANCE_KEY = "starcenter_simulation"


@dataclass
class SimulationSummary:
    """What :func:`simulate` did: the store, the config, chunks written and skipped."""

    store: str
    config: SimulationConfig
    written: int
    skipped: int
    stars_per_chip: dict[str, int]


def _truth_dataset(stars, chips, config: SimulationConfig):

    nmax = max(len(stars[c].mag) for c in chips)
    ids = np.full((len(chips), nmax), -1, np.int64)
    mag = np.full((len(chips), nmax), np.nan)
    flux = np.full((len(chips), nmax), np.nan)
    for i, c in enumerate(chips):
        s = stars[c]
        ids[i, : len(s.mag)] = s.star_id
        mag[i, : len(s.mag)] = s.mag
        flux[i, : len(s.mag)] = star_flux(s.mag, config)
    sizes = {schema.EXPOSURE: config.n_exposures, schema.CHIP: len(chips), schema.STAR: nmax}
    coords = {schema.EXPOSURE: np.arange(config.n_exposures), schema.CHIP: np.array(chips, dtype=object)}
    ds, enc = schema.template(schema.TRUTH, ("star_id", "mag", "flux", "x", "y", "done"), sizes, coords, {
        "pixel_convention": schema.PIXEL_CONVENTION,
        "description": "simulation truth; padded star slots have star_id -1 and NaN"},
        values={"star_id": ids, "mag": mag, "flux": flux})
    ds["mag"].attrs["filter"] = config.filter
    return ds, enc


def _exposures_dataset(config: SimulationConfig, dithers: Dithers, focus: np.ndarray):

    chips = list(config.chips)
    ne, nc, n = config.n_exposures, len(chips), C.CHIP_SIZE
    mjd = config.start_mjd + config.cadence_days * np.arange(ne)
    from astropy.time import Time

    epoch = Time(mjd, format="mjd").decimalyear
    ds, enc = schema.template(schema.EXPOSURES, ("image", "dq", "done"),
                              {schema.EXPOSURE: ne, schema.CHIP: nc, schema.Y: n, schema.X: n}, {}, {})
    ds["dq"].attrs.update(flag_masks=list(C.DQ_FLAGS.values()), flag_meanings=" ".join(C.DQ_FLAGS))
    ds = ds.assign_coords({
        schema.EXPOSURE: np.arange(ne),
        schema.CHIP: np.array(chips, dtype=object),
        "rootname": (schema.EXPOSURE, np.array([f"sim{e:05d}" for e in range(ne)], dtype=object)),
        "exptime": (schema.EXPOSURE, np.full(ne, config.exptime), {"units": "s"}),
        "mjd": (schema.EXPOSURE, mjd, {"units": "d", "long_name": "EXPSTART"}),
        "epoch": (schema.EXPOSURE, epoch, {"units": "yr"}),
        "offset_u": (schema.EXPOSURE, dithers.offset_u, {"units": "arcsec",
                     "description": "true pointing offset from exposure 0 (global frame)"}),
        "offset_v": (schema.EXPOSURE, dithers.offset_v, {"units": "arcsec"}),
        "roll": (schema.EXPOSURE, dithers.roll_deg, {"units": "deg"}),
        "focus": (schema.EXPOSURE, focus, {"units": "um", "long_name": "true SM despace"}),
        "focus_offset": (schema.CHIP, np.array([config.chip_focus(c) for c in chips]),
                         {"units": "um", "description": "added to focus on this chip"}),
        "gain": (schema.CHIP, np.array([C.GAIN[config.atodgain][c] for c in chips]), {"units": "e-/DN"}),
        "read_noise": (schema.CHIP, np.array([C.READ_NOISE[config.atodgain][c] for c in chips]),
                       {"units": "e-"}),
        "pixel_scale": (schema.CHIP, np.array([C.PIXEL_SCALE[c] for c in chips]), {"units": "arcsec/px"}),
    }).assign_attrs({"filter": config.filter, "atodgain": config.atodgain, "source": "simulation",
           "instrument": "WFPC2", "pixel_convention": schema.PIXEL_CONVENTION,
           "saturation_dn": C.AD_SATURATION_DN})
    return ds, enc


def _write_chunk(store: str, ctx: ChipContext, exposure: int, chip_index: int):
    import zarr

    image, dq, x, y = simulate_chunk(ctx, exposure)
    root = zarr.open_group(store, mode="r+")
    root[f"{schema.EXPOSURES}/image"][exposure, chip_index] = image
    root[f"{schema.EXPOSURES}/dq"][exposure, chip_index] = dq
    tx = root[f"{schema.TRUTH}/x"]
    pad = np.full(tx.shape[2] - x.size, np.nan)
    tx[exposure, chip_index] = np.concatenate([x, pad])
    root[f"{schema.TRUTH}/y"][exposure, chip_index] = np.concatenate([y, pad])
    # the markers go last: a chunk counts as done only once all its data are on disk
    root[f"{schema.TRUTH}/done"][exposure, chip_index] = 1
    root[f"{schema.EXPOSURES}/done"][exposure, chip_index] = 1
    return exposure, chip_index


def _preflight(store, config: SimulationConfig, **_) -> None:
    from starcenter.cubes import store as st

    st.check_store(store, PROVENANCE_KEY, config.to_json())


@driver.preflight(_preflight)
@driver.holds_lock("simulate")
def simulate(store, config: SimulationConfig, progress: bool = True) -> SimulationSummary:
    """Simulate ``config`` into ``store`` (created, or resumed if made with the same config).

    Uses the active dask scheduler (a distributed Client if one exists). Raises
    StoreMismatchError, without touching the store, if it exists with other parameters.
    """
    import dask

    from starcenter.cubes import store as st

    path = st.store_path(store)
    resumed = st.init_store(path, PROVENANCE_KEY, config.to_json())
    chips = list(config.chips)
    precompute_psfs(config, progress)
    psfs = {c: chip_psfs(c, config) for c in chips}
    cluster = ClusterModel(density=config.density)
    stars = star_field(config.seed, chips, cluster, config.bright_enhanced, dict(config.chip_density_scale) or None)
    dithers = gilliland_dithers(config.seed, config.n_exposures)
    focus = exposure_focus(config)
    if not (resumed and st.has_group(path, schema.PSF)):
        st.write_dataset(path, schema.PSF, psf_dataset(psfs, config))
    if not (resumed and st.has_group(path, schema.TRUTH)):
        st.write_template(path, schema.TRUTH, *_truth_dataset(stars, chips, config))
    if not (resumed and st.has_group(path, schema.EXPOSURES)):
        st.write_template(path, schema.EXPOSURES, *_exposures_dataset(config, dithers, focus))
    done = st.done_mask(path, schema.EXPOSURES)
    ctx = {}
    for ci, chip in enumerate(chips):
        s = stars[chip]
        ctx[ci] = dask.delayed(ChipContext(chip, config, psfs[chip], s.u, s.v, star_flux(s.mag, config),
                                           dithers, focus + config.chip_focus(chip)), traverse=False)
    written = driver.run_chunks(path, schema.EXPOSURES, done,
                                lambda e, c: dask.delayed(_write_chunk, pure=True)(path, ctx[c], e, c),
                                f"simulate {path}", progress)
    return SimulationSummary(path, config, written, done.sum().item(),
                             {c: len(stars[c].mag) for c in chips})
