"""Anderson's STDPSF WFPC2 ePSF libraries (the hst1pass library), read with photutils.

An STDPSF file holds a grid of 4x-supersampled ePSFs over the four chips (WFPC2: 3 x 3 per chip
at chip pixels 50, 425, 800); photutils' ``GriddedPSFModel.read(..., format="stdpsf")`` splits it
by detector. ``detect --library PATH`` uses the chip's ePSF at the chip centre (bilinear between
its grid ePSFs) in place of the physical model's library ePSF.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import BadInputError
from starcenter.cubes.sim.truepsf import field_weights


def stdpsf_filter(path) -> str | None:
    """The filter an STDPSF file is for, from its name (e.g. STDPSF_WFPC2_F814W.fits), or None."""
    m = re.search(r"_(F\d{3,4}[A-Z]{1,2})(?:_|\.|$)", Path(path).name.upper())
    return m.group(1) if m else None


def read_stdpsf(path, chip: str, filt: str | None = None) -> EffectivePSF:
    """The ePSF of ``chip`` at its centre (pixel 400, 400) from the STDPSF file ``path``.

    Raises BadInputError naming the file when it is missing, not an STDPSF WFPC2 grid, or made
    for another filter than ``filt``.
    """
    from photutils.psf import GriddedPSFModel

    path = Path(path)
    if not path.is_file():
        raise BadInputError(str(path), "no such STDPSF file")
    made_for = stdpsf_filter(path)
    if filt is not None and made_for is not None and made_for != filt:
        raise BadInputError(str(path), f"is an ePSF library for {made_for}, the store's exposures are {filt}")
    try:
        model = GriddedPSFModel.read(str(path), format="stdpsf", detector_id=C.DETECTOR_NUMBER[chip])
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise BadInputError(str(path), f"not a WFPC2 STDPSF ePSF library ({err})") from None
    xy = np.asarray(model.grid_xypos, float)  # 0-based chip pixels (photutils converts)
    data = np.asarray(model.data, float)
    centre = np.array([(C.CHIP_SIZE - 1) / 2])
    w = np.ones(len(xy))
    for axis in (0, 1):  # bilinear at the chip centre, as the simulator weights its field nodes
        nodes = np.unique(xy[:, axis])
        w *= np.interp(xy[:, axis], nodes, field_weights(centre, nodes)[:, 0])
    epsf = np.tensordot(w / w.sum(), data, axes=1)
    return EffectivePSF(_to_grid(epsf), schema.OVERSAMPLING).normalized()


def _to_grid(epsf: np.ndarray) -> np.ndarray:
    """Centre an odd-sized ePSF array in the schema's EPSF_SAMPLES grid (zero-padded or cropped)."""
    n, (ny, nx) = schema.EPSF_SAMPLES, epsf.shape
    if ny % 2 == 0 or nx % 2 == 0:
        raise BadInputError("STDPSF", f"ePSF of even size {epsf.shape}: no centre sample")
    out = np.zeros((n, n))
    h, hy, hx = n // 2, min(ny // 2, n // 2), min(nx // 2, n // 2)
    cy, cx = ny // 2, nx // 2
    out[h - hy:h + hy + 1, h - hx:h + hx + 1] = epsf[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1]
    return out
