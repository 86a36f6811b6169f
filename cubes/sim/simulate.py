"""Simulate a dithered WFPC2 data set into a store: the psf, truth and exposures groups.

The paper's in-house simulator (section 4.1), rebuilt on physical optics: a 47 Tuc-like field,
Gilliland-like sub-pixel dithers, a true ePSF whose focus differs from the library ePSF, and a
WFPC2 detector (gain, read noise, sky, dark, Poisson noise, bleeding, A/D saturation, bias/dark/
flat calibration; optional cosmic rays and CTI). Writing is lazy and per (exposure, chip)
chunk; each chunk's random numbers depend only on (seed, exposure, chip), so the result is
bit-identical whatever the number of workers, and a rerun skips chunks already written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import driver, schema
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import BadArgumentError
from starcenter.cubes.sim import detector
from starcenter.cubes.sim.field import (
    ClusterModel,
    Dithers,
    gilliland_dithers,
    global_to_chip,
    star_field,
)
from starcenter.cubes.sim.optics import FIELD_NODES, PSFEpoch, PSFParams, get_epsf

#: HST orbital period (days), the period of focus breathing.
ORBIT_DAYS = 96.4 / 1440
#: Start of the PID 8267 (Gilliland) NGC 104 campaign, MJD (1999 July 3).
GILLILAND_START_MJD = 51362.0


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of one simulated data set (all of them are recorded in the store).

    focus_um is the data set's secondary-mirror despace relative to the library ePSF (the
    PSF epoch): 0 gives a library that matches the truth. sky is in e-/s/arcsec^2.
    """

    n_exposures: int = 24
    chips: tuple[str, ...] = ("PC1", "WF3")
    filter: str = "F555W"
    exptime: float = 160.0
    atodgain: int = 7
    focus_um: float = 5.0
    breathing_um: float = 0.0
    field_varying: bool = False
    bright_enhanced: bool = False
    density: float = ClusterModel.density
    sky: float = 6.0
    cosmic_rays: bool = False
    cti: bool = False
    seed: int = 1
    start_mjd: float = GILLILAND_START_MJD
    cadence_days: float = 8.3 / 636

    def __post_init__(self):
        chips = tuple(self.chips)
        object.__setattr__(self, "chips", chips)
        bad = [c for c in chips if c not in C.CHIPS]
        if bad or not chips:
            raise BadArgumentError(f"unknown chip(s) {bad or chips}; expected some of {C.CHIPS}")
        if len(set(chips)) != len(chips):
            raise BadArgumentError(f"chip listed twice in {chips}")
        if self.filter not in C.FILTERS:
            raise BadArgumentError(f"unknown filter {self.filter!r}; expected one of {tuple(C.FILTERS)}")
        if int(self.n_exposures) < 2:
            raise BadArgumentError(f"need at least 2 exposures for a dithered set, got {self.n_exposures}")
        if self.atodgain not in C.GAIN:
            raise BadArgumentError(f"ATODGAIN must be 7 or 15, got {self.atodgain}")
        if self.exptime <= 0 or self.density <= 0 or self.sky < 0 or self.breathing_um < 0:
            raise BadArgumentError("exptime and density must be > 0, sky and breathing >= 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def epoch(self) -> PSFEpoch:
        return PSFEpoch(self.focus_um, self.breathing_um, self.field_varying)


#: Named presets. ``demo`` is the embedded default data set; ``gilliland`` the paper's scale.
PRESETS: dict[str, SimulationConfig] = {
    "demo": SimulationConfig(n_exposures=24, chips=("PC1", "WF3")),
    "gilliland": SimulationConfig(n_exposures=636, chips=C.CHIPS),
}


def make_config(preset: str = "demo", **overrides) -> SimulationConfig:
    """A preset with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise BadArgumentError(f"unknown preset {preset!r}; expected one of {tuple(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# PSF model of a data set


@dataclass
class ChipPSFs:
    """Library ePSF and the true ePSF nodes (focus x field_y x field_x) of one chip."""

    library: EffectivePSF
    nodes: np.ndarray  # object array of EffectivePSF, shape (n_focus, n_fy, n_fx)
    focus: np.ndarray  # um, node focus values
    field: np.ndarray  # px, field node coordinates (same for x and y)

    def for_exposure(self, focus_um: float) -> np.ndarray:
        """The (n_fy, n_fx) true ePSFs of an exposure at ``focus_um`` (linear in focus)."""
        if len(self.focus) == 1:
            return self.nodes[0]
        i = int(np.clip(np.searchsorted(self.focus, focus_um) - 1, 0, len(self.focus) - 2))
        t = (focus_um - self.focus[i]) / (self.focus[i + 1] - self.focus[i])
        out = np.empty(self.nodes.shape[1:], dtype=object)
        for idx in np.ndindex(out.shape):
            out[idx] = EffectivePSF.interpolate([self.nodes[i][idx], self.nodes[i + 1][idx]],
                                                [1 - t, t])
        return out


def chip_psfs(chip: str, config: SimulationConfig) -> ChipPSFs:
    """Compute (or load from the cache) the library and true ePSFs of one chip."""
    library = get_epsf(PSFParams(chip, config.filter, 0.0))
    focus = np.array(config.epoch.nodes())
    fld = np.array(FIELD_NODES) if config.field_varying else np.array([C.CHIP_SIZE / 2])
    nodes = np.empty((len(focus), len(fld), len(fld)), dtype=object)
    for i, f in enumerate(focus):
        for j, fy in enumerate(fld):
            for k, fx in enumerate(fld):
                pos = (float(fx), float(fy)) if config.field_varying else None
                nodes[i, j, k] = get_epsf(PSFParams(chip, config.filter, float(f), pos))
    return ChipPSFs(library, nodes, focus, fld)


def _field_weights(coord: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Linear interpolation weights (n_nodes, n) of coordinates between field nodes."""
    w = np.zeros((len(nodes), coord.size))
    if len(nodes) == 1:
        w[0] = 1
        return w
    c = np.clip(coord, nodes[0], nodes[-1])
    i = np.clip(np.searchsorted(nodes, c) - 1, 0, len(nodes) - 2)
    t = (c - nodes[i]) / (nodes[i + 1] - nodes[i])
    np.put_along_axis(w, i[None], (1 - t)[None], axis=0)
    w[i + 1, np.arange(c.size)] += t
    return w


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
    """Per-exposure focus (um): the epoch offset plus sinusoidal orbital breathing."""
    t = config.start_mjd + config.cadence_days * np.arange(config.n_exposures)
    return config.focus_um + config.breathing_um * np.sin(2 * np.pi * t / ORBIT_DAYS)


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
    wy = _field_weights(y, ctx.psfs.field)
    wx = _field_weights(x, ctx.psfs.field)
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
    if cfg.cti:
        electrons = detector.cti(electrons)
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


def _psf_dataset(psfs: dict[str, ChipPSFs], config: SimulationConfig):
    import xarray as xr

    chips = list(psfs)
    n = schema.EPSF_SAMPLES
    off = (np.arange(n) - (n - 1) / 2) / schema.OVERSAMPLING
    p0 = psfs[chips[0]]
    true = np.array([[[[psfs[c].nodes[i, j, k].data for k in range(len(p0.field))]
                       for j in range(len(p0.field))] for i in range(len(p0.focus))]
                     for c in chips])
    lib = np.array([psfs[c].library.data for c in chips])
    ds = xr.Dataset(
        {
            "library": ((schema.CHIP, schema.EY, schema.EX), lib,
                        {"units": "flux fraction per pixel",
                         "description": "library ePSF: nominal focus (zero despace), chip centre"}),
            "true": ((schema.CHIP, schema.FOCUS, schema.FIELD_Y, schema.FIELD_X, schema.EY, schema.EX),
                     true, {"units": "flux fraction per pixel",
                            "description": "true ePSF nodes of this data set; exposures interpolate "
                                           "linearly in focus and field"}),
        },
        coords={
            schema.CHIP: np.array(chips, dtype=object),
            schema.FOCUS: (schema.FOCUS, p0.focus, {"units": "um", "long_name": "SM despace"}),
            schema.FIELD_Y: (schema.FIELD_Y, p0.field, {"units": "px"}),
            schema.FIELD_X: (schema.FIELD_X, p0.field, {"units": "px"}),
            schema.EY: (schema.EY, off, {"units": "px", "long_name": "offset from star, y"}),
            schema.EX: (schema.EX, off, {"units": "px", "long_name": "offset from star, x"}),
        },
        attrs={"oversampling": schema.OVERSAMPLING, "filter": config.filter,
               "model": "poppy physical optics, pixel-integrated, charge diffusion (cubes.optics)",
               "pixel_convention": schema.PIXEL_CONVENTION},
    )
    return ds


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
    psfs = {c: chip_psfs(c, config) for c in chips}
    cluster = ClusterModel(density=config.density)
    stars = star_field(config.seed, chips, cluster, config.bright_enhanced)
    dithers = gilliland_dithers(config.seed, config.n_exposures)
    focus = exposure_focus(config)
    if not (resumed and st.has_group(path, schema.PSF)):
        st.write_dataset(path, schema.PSF, _psf_dataset(psfs, config))
    if not (resumed and st.has_group(path, schema.TRUTH)):
        st.write_template(path, schema.TRUTH, *_truth_dataset(stars, chips, config))
    if not (resumed and st.has_group(path, schema.EXPOSURES)):
        st.write_template(path, schema.EXPOSURES, *_exposures_dataset(config, dithers, focus))
    done = st.done_mask(path, schema.EXPOSURES)
    ctx = {}
    for ci, chip in enumerate(chips):
        s = stars[chip]
        ctx[ci] = dask.delayed(ChipContext(chip, config, psfs[chip], s.u, s.v, star_flux(s.mag, config),
                                           dithers, focus), traverse=False)
    written = driver.run_chunks(path, schema.EXPOSURES, done,
                                lambda e, c: dask.delayed(_write_chunk, pure=True)(path, ctx[c], e, c),
                                f"simulate {path}", progress)
    return SimulationSummary(path, config, written, done.sum().item(),
                             {c: int(len(stars[c].mag)) for c in chips})
