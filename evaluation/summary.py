"""Short numeric summaries of a store (used by the demo and the notes)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes.store import open_group


def central_third(x, y, size: int = C.CHIP_SIZE):
    """Mask of positions in the central third of the chip in both coordinates (px)."""
    lo, hi = size / 3 - 0.5, 2 * size / 3 - 0.5
    return (x >= lo) & (x < hi) & (y >= lo) & (y < hi)


def isolated_stars(store, exposure: int = 0, min_flux_e: float = 1000.0,
                   radius_px: float = 5.0, saturation_e: float | None = None) -> dict[str, dict]:
    """From simulation truth, per chip: stars above ``min_flux_e`` in the central third, and
    how many have no other such star within ``radius_px`` (and, if ``saturation_e`` is given,
    are fainter than it). The paper's training stars are of this kind (its Table 3)."""
    truth = open_group(store, schema.TRUTH)
    out = {}
    for k, chip in enumerate(str(c) for c in truth[schema.CHIP].values):
        flux = truth["flux"].isel(chip=k).values
        x = truth["x"].isel(exposure=exposure, chip=k).values
        y = truth["y"].isel(exposure=exposure, chip=k).values
        ok = np.isfinite(flux) & (flux > min_flux_e)
        x, y, flux = x[ok], y[ok], flux[ok]
        d, _ = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)
        cen = central_third(x, y)
        iso = cen & (d[:, 1] > radius_px)
        if saturation_e is not None:
            iso &= flux < saturation_e
        out[chip] = {"central_third": int(cen.sum()), "isolated": int(iso.sum())}
    return out


def psf_mismatch(store) -> dict[str, dict]:
    """Per chip: peak-pixel fraction of the library and true ePSFs (star centred on a pixel)."""
    from starcenter.cubes.lookup import chip_epsfs
    from starcenter.cubes.params import DetectParams

    psf = open_group(store, schema.PSF)
    chips, library = chip_epsfs(store, DetectParams("library"))
    _, true_epsf = chip_epsfs(store, DetectParams("true"))
    out = {}
    for chip in chips:
        lib, true = library[chip](0), true_epsf[chip](0)
        out[chip] = {"library_peak": float(lib.evaluate(0, 0)),
                     "true_peak": float(true.evaluate(0, 0)),
                     "true_focus_um": float(psf[schema.FOCUS].values[0])}
    return out
