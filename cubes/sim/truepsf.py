"""The true ePSFs of a simulated data set: nodes over focus and field, computed in parallel and
cached on disk (:mod:`starcenter.cubes.sim.optics`), and their ``psf`` group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.sim.config import SimulationConfig
from starcenter.cubes.sim.optics import FIELD_NODES, PSFParams, cached_path, get_epsf


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


def _node_params(chip: str, config: SimulationConfig):
    """The focus and field nodes of one chip and the PSFParams of each true ePSF node."""
    focus = np.array(config.epoch.nodes()) + config.chip_focus(chip)
    fld = np.array(FIELD_NODES) if config.field_varying else np.array([C.CHIP_SIZE / 2])
    params = {}
    for i, f in enumerate(focus):
        for j, fy in enumerate(fld):
            for k, fx in enumerate(fld):
                pos = (float(fx), float(fy)) if config.field_varying else None
                params[i, j, k] = PSFParams(chip, config.filter, float(f), pos)
    return focus, fld, params


def chip_psfs(chip: str, config: SimulationConfig) -> ChipPSFs:
    """Compute (or load from the cache) the library and true ePSFs of one chip."""
    library = get_epsf(PSFParams(chip, config.filter, 0.0))
    focus, fld, params = _node_params(chip, config)
    nodes = np.empty((len(focus), len(fld), len(fld)), dtype=object)
    for idx, p in params.items():
        nodes[idx] = get_epsf(p)
    return ChipPSFs(library, nodes, focus, fld)


def precompute_psfs(config: SimulationConfig, progress: bool = True) -> int:
    """Compute the ePSF nodes not yet in the disk cache on the active dask scheduler (one task
    each: a focus sweep with the field-varying PSF needs hundreds, ~1.7 s each); returns how many."""
    import dask

    from starcenter.cubes import store as st

    todo = [PSFParams(c, config.filter, 0.0) for c in config.chips]
    todo += [p for c in config.chips for p in _node_params(c, config)[2].values()]
    todo = [p for p in dict.fromkeys(todo) if not cached_path(p).exists()]
    if todo:
        st.run_tasks([dask.delayed(get_epsf)(p) for p in todo], f"true ePSF nodes ({len(todo)} to compute)",
                     progress)
    return len(todo)


def field_weights(coord: np.ndarray, nodes: np.ndarray) -> np.ndarray:
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



def psf_dataset(psfs: dict[str, ChipPSFs], config: SimulationConfig):
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
            schema.FOCUS: (schema.FOCUS, p0.focus - config.chip_focus(chips[0]),
                           {"units": "um", "long_name": "SM despace (before each chip's focus_offset)"}),
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


