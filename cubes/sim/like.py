"""A simulation that mirrors a store (``simulate OUT --like STORE``): same chips, filter, exposure
time and gain, the sky level, the density of 1e4-1e5 e- stars and each chip's fitted focus.

So a real exposure can be matched by simulations with exact truth. What is measured from the
store (its first exposure):

- star density, per chip: the simulator's density scaled by (stars of 1e4 to 1e5 e- found in the
  store) / (those found in a probe exposure simulated at the default density); the luminosity
  function's shape stays the simulator's 47 Tuc-like one;
- sky (e-/s/arcsec^2): the local-sky map (photutils Background2D, as detection uses) less the
  probe's unresolved starlight, median over chips;
- focus: each chip's median fitted focus (``psf_fit``, the psf stage: run it first), as per-chip
  offsets; the field-varying PSF is on; cosmic rays are on for archive data.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes import store as st
from starcenter.cubes.errors import StoreMismatchError
from starcenter.cubes.sim.config import PRESETS, SimulationConfig
from starcenter.cubes.sim.field import ClusterModel, star_field
from starcenter.cubes.sim.simulate import star_flux

#: Flux range (e-) of the stars counted to set the density: bright enough to be complete.
COUNT_RANGE = (1e4, 1e5)


def _require(path: str):
    if not st.has_group(path, schema.EXPOSURES):
        raise StoreMismatchError(path, "has no exposures group: --like mirrors a store made by "
                                       "`starcenter ingest` or `starcenter simulate`")
    ex = st.open_group(path, schema.EXPOSURES)
    if ex.sizes.get(schema.EXPOSURE, 0) == 0:
        raise StoreMismatchError(path, "has no exposure to mirror")
    if not st.has_group(path, schema.PSF_FIT) or "epsf" not in st.open_group(path, schema.PSF_FIT):
        raise StoreMismatchError(path, "has no fitted focus: run `starcenter psf STORE --fit focus` "
                                       "on it first (--like mirrors each chip's focus)")
    return ex


def chip_stats(image, dq, gain: float, rn: float, filt: str, chip: str) -> tuple[float, int]:
    """(median local sky in DN, stars of COUNT_RANGE e- found and fitted) of one chip image."""
    from starcenter.cubes.classical.peaks import find_peaks, local_sky
    from starcenter.cubes.classical.psffit import fit_stars

    image = np.asarray(image, float)
    sky_dn = float(np.median(local_sky(np.where(np.isfinite(image), image, np.nanmedian(image)))))
    pk = find_peaks(image, dq, gain, rn, 5.0, 2.0)
    f = fit_stars(image, pk.x, pk.y, _library(chip, filt), gain, rn, pk.saturated, sky=pk.sky)
    e = f.flux * gain
    return sky_dn, int(((e >= COUNT_RANGE[0]) & (e < COUNT_RANGE[1]) & (f.flags == 0)).sum())


def measured(store) -> dict:
    """What the store shows, per chip: sky (DN), stars of COUNT_RANGE e- and the median fitted
    focus (um); and the filter, exposure time (s) and A/D gain."""
    path = st.store_path(store)
    ex = _require(path)
    fit = st.open_group(path, schema.PSF_FIT)
    out = {"filter": ex.attrs["filter"], "exptime": float(ex["exptime"].values[0]),
           "atodgain": int(ex.attrs.get("atodgain", 7)), "source": ex.attrs.get("source", ""),
           "n_exposures": int(ex.sizes[schema.EXPOSURE]), "chips": {}}
    root = st.open_root(path)
    for c, chip in enumerate(str(v) for v in ex[schema.CHIP].values):
        dq = root[f"{schema.EXPOSURES}/dq"][0, c] if "dq" in ex else None
        sky_dn, n = chip_stats(root[f"{schema.EXPOSURES}/image"][0, c], dq, float(ex["gain"].values[c]),
                               float(ex["read_noise"].values[c]), out["filter"], chip)
        focus = fit["focus"].values[:, c]
        out["chips"][chip] = {"sky_dn": sky_dn, "stars": n, "gain": float(ex["gain"].values[c]),
                              "focus_um": float(np.nanmedian(focus)) if np.isfinite(focus).any() else 0.0}
    return out


def _library(chip: str, filt: str):
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    return get_epsf(PSFParams(chip, filt))


def _probe(cfg: SimulationConfig, chip: str) -> tuple[float, int]:
    """:func:`chip_stats` of exposure 0 of ``chip`` simulated with ``cfg`` (rendered in memory)."""
    from starcenter.cubes.sim.field import gilliland_dithers
    from starcenter.cubes.sim.simulate import ChipContext, exposure_focus, simulate_chunk
    from starcenter.cubes.sim.truepsf import chip_psfs

    s = star_field(cfg.seed, [chip], ClusterModel(density=cfg.density))[chip]
    ctx = ChipContext(chip, cfg, chip_psfs(chip, cfg), s.u, s.v, star_flux(s.mag, cfg),
                      gilliland_dithers(cfg.seed, cfg.n_exposures), exposure_focus(cfg) + cfg.chip_focus(chip))
    image, dq, _, _ = simulate_chunk(ctx, 0)
    return chip_stats(image, dq, C.GAIN[cfg.atodgain][chip], C.READ_NOISE[cfg.atodgain][chip], cfg.filter, chip)


def like_config(store, n_exposures: int | None = None, seed: int = 1,
                field_varying: bool = True) -> tuple[SimulationConfig, dict]:
    """The SimulationConfig that mirrors ``store`` and what was measured.

    One exposure per chip is first simulated at the default density and sky with the store's
    chips, filter, exposure time and focus; each chip's density is scaled by its ratio of stars of
    COUNT_RANGE e- found (store / probe), and the sky set to the store's local sky minus the
    probe's unresolved starlight (its local sky above the default sky, scaled with the density):
    in a crowded field the local sky is mostly faint stars, which the simulation adds itself.
    """
    m = measured(store)
    chips = tuple(m["chips"])
    probe = replace(PRESETS["demo"], chips=chips, filter=m["filter"], exptime=m["exptime"], atodgain=m["atodgain"],
                    seed=seed, n_exposures=max(2, n_exposures or m["n_exposures"]), field_varying=field_varying,
                    focus_um=0.0,  # each chip's focus to 0.1 um (the fit's own error is ~0.07 um)
                    chip_focus_um=tuple((c, round(v["focus_um"], 1)) for c, v in m["chips"].items()))
    ratios, sky_rate = [], []
    for chip, v in m["chips"].items():
        sky_dn, n = _probe(probe, chip)
        v.update(probe_sky_dn=sky_dn, probe_stars=n)
        ratios.append(v["stars"] / max(n, 1))
    ratio = max(max(ratios), 1e-3)  # the densest chip sets the density, the others are thinned
    for (chip, v), r in zip(m["chips"].items(), ratios):
        default_dn = probe.sky * probe.exptime * C.PIXEL_SCALE[chip] ** 2 / v["gain"]
        sky_dn = v["sky_dn"] - (v["probe_sky_dn"] - default_dn) * r
        sky_rate.append(max(sky_dn, 0.0) * v["gain"] / probe.exptime / C.PIXEL_SCALE[chip] ** 2)
    scale = tuple((c, round(max(r / ratio, 1e-3), 4)) for c, r in zip(m["chips"], ratios) if r < ratio)
    cfg = replace(probe, density=probe.density * ratio, sky=float(np.median(sky_rate)),
                  cosmic_rays=m["source"] == "archive", chip_density_scale=scale)
    m.update(density_ratios=ratios, sky_rate_per_chip=sky_rate)
    return cfg, m
