"""A simulation that mirrors a store (``simulate OUT --like STORE``): same chips, filter, exposure
time and gain, the sky level, the density of 1e4-1e5 e- stars and each chip's fitted focus.

So a real exposure can be matched by simulations with exact truth. What is measured from the
store (its first exposure):

- sky (e-/s/arcsec^2): the median over chips of the local-sky map (photutils Background2D, as
  detection uses) converted with each chip's gain and pixel scale;
- star density: the simulator's density scaled by the median over chips of (stars of 1e4 to 1e5
  e- the store's detections find) / (true stars in that range the simulated field puts on the
  chip); the luminosity function's shape stays the simulator's 47 Tuc-like one;
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
from starcenter.cubes.sim.field import ClusterModel, global_to_chip, star_field
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


def measured(store) -> dict:
    """What the store shows, per chip: sky (e-/s/arcsec^2), stars of COUNT_RANGE e- and the
    median fitted focus (um); and the filter, exposure time (s) and A/D gain."""
    from starcenter.cubes.classical.peaks import find_peaks, local_sky
    from starcenter.cubes.classical.psffit import fit_stars

    path = st.store_path(store)
    ex = _require(path)
    fit = st.open_group(path, schema.PSF_FIT)
    exptime = float(ex["exptime"].values[0])
    out = {"filter": ex.attrs["filter"], "exptime": exptime, "atodgain": int(ex.attrs.get("atodgain", 7)),
           "source": ex.attrs.get("source", ""), "chips": {}}
    root = st.open_root(path)
    for c, chip in enumerate(str(v) for v in ex[schema.CHIP].values):
        image = np.asarray(root[f"{schema.EXPOSURES}/image"][0, c], float)
        dq = root[f"{schema.EXPOSURES}/dq"][0, c] if "dq" in ex else None
        gain, rn = float(ex["gain"].values[c]), float(ex["read_noise"].values[c])
        sky_dn = float(np.median(local_sky(np.where(np.isfinite(image), image, np.nanmedian(image)))))
        pk = find_peaks(image, dq, gain, rn, 5.0, 2.0)
        f = fit_stars(image, pk.x, pk.y, _library(chip, out["filter"]), gain, rn, pk.saturated, sky=pk.sky)
        e = f.flux * gain
        n = int(((e >= COUNT_RANGE[0]) & (e < COUNT_RANGE[1]) & (f.flags == 0)).sum())
        focus = fit["focus"].values[:, c]
        out["chips"][chip] = {"sky": sky_dn * gain / exptime / C.PIXEL_SCALE[chip] ** 2, "stars": n,
                              "focus_um": float(np.nanmedian(focus)) if np.isfinite(focus).any() else 0.0}
    return out


def _library(chip: str, filt: str):
    from starcenter.cubes.sim.optics import PSFParams, get_epsf

    return get_epsf(PSFParams(chip, filt))


def like_config(store, n_exposures: int | None = None, seed: int = 1) -> tuple[SimulationConfig, dict]:
    """The SimulationConfig that mirrors ``store`` and what was measured (see the module)."""
    m = measured(store)
    chips = tuple(m["chips"])
    base = replace(PRESETS["demo"], chips=chips, filter=m["filter"], exptime=m["exptime"],
                   atodgain=m["atodgain"], seed=seed)
    model = ClusterModel(density=base.density)
    field = star_field(seed, chips, model)
    ratios = []
    for chip in chips:
        s = field[chip]
        x, y = global_to_chip(chip, s.u, s.v)
        on = (x >= 0) & (x < C.CHIP_SIZE) & (y >= 0) & (y < C.CHIP_SIZE)
        e = star_flux(s.mag[on], base)
        n_sim = int(((e >= COUNT_RANGE[0]) & (e < COUNT_RANGE[1])).sum())
        m["chips"][chip]["stars_simulated_at_default_density"] = n_sim
        if n_sim:
            ratios.append(m["chips"][chip]["stars"] / n_sim)
    density = base.density * float(np.median(ratios)) if ratios else base.density
    cfg = replace(base, n_exposures=max(2, n_exposures or max(2, _count(store))),
                  density=max(density, 1e-3),
                  sky=float(np.median([v["sky"] for v in m["chips"].values()])),
                  focus_um=0.0, chip_focus_um=tuple((c, round(v["focus_um"], 3)) for c, v in m["chips"].items()),
                  field_varying=True, cosmic_rays=m["source"] == "archive")
    return cfg, m


def _count(store) -> int:
    return int(st.open_group(store, schema.EXPOSURES).sizes[schema.EXPOSURE])
