"""An ePSF that varies over the chip, and fits with it (kernels on arrays).

A WFPC2 chip's PSF is not one PSF: TinyTim's field-dependent aberrations move its best focus by
up to ~2 um-equivalent of secondary-mirror despace between centre and corners (PC1), and WF3's
astigmatism and coma change by more than its focus term across the chip. A :class:`FieldEPSF` is
the physical model at one secondary-mirror despace over the whole chip: node ePSFs on a 3x3 grid
of chip positions (the simulator's own field nodes), bilinear in between (clamped outside), each
linear in focus between the nodes of a focus lattice. Stars are grouped in CELLS x CELLS cells
and each cell is fitted with the ePSF at its centre (:func:`fit_grouped`).
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.psffit import FitResult, fit_stars, model_image

#: Cells per chip side: 6 x 6 cells of 133 px, across which the model's ePSF changes by < 1 % of
#: its peak.
CELLS = 6
#: Chip side (px) and the chip positions (px) of the field nodes, in x and in y.
CHIP_PX = 800
FIELD_NODES = (100.0, 400.0, 700.0)


def lattice_epsf(epsf_at, focus: float, step: float, *args) -> EffectivePSF:
    """The ePSF at ``focus`` (um), linear between the two ``step``-um lattice nodes around it
    (``epsf_at(node, *args)`` is only ever called at lattice nodes: ePSFs are shared and cached)."""
    k = np.floor(focus / step + 1e-9)
    lo, hi = round(k * step, 6), round((k + 1) * step, 6)
    t = (focus - lo) / step
    if t < 1e-9:
        return epsf_at(lo, *args)
    return EffectivePSF.interpolate([epsf_at(lo, *args), epsf_at(hi, *args)], [1 - t, t])


def _weights(c: float, nodes) -> list[tuple[int, float]]:
    """Linear interpolation weights of coordinate ``c`` (px) between ``nodes`` (clamped)."""
    c = float(np.clip(c, nodes[0], nodes[-1]))
    i = min(int(np.searchsorted(nodes, c, side="right")) - 1, len(nodes) - 2)
    t = (c - nodes[i]) / (nodes[i + 1] - nodes[i])
    return [(i, 1 - t), (i + 1, t)]


class FieldEPSF:
    """The model's ePSF of one chip at despace ``focus`` (um) anywhere on the chip.

    ``epsf_at(f, j, k)`` gives the node ePSF at lattice focus ``f`` (um) and field node
    (FIELD_NODES[k], FIELD_NODES[j]) (x, y); ``step`` is the lattice spacing (um). ``centre`` is
    the ePSF at the chip centre (peak finding uses it).
    """

    def __init__(self, epsf_at, focus: float, step: float = 1.0, cells: int = CELLS):
        self.epsf_at, self.focus, self.step, self.cells = epsf_at, float(focus), step, cells
        self._cache: dict[int, EffectivePSF] = {}
        self.centre = self._at_position(CHIP_PX / 2 - 0.5, CHIP_PX / 2 - 0.5)
        self.oversampling = self.centre.oversampling

    def _at_position(self, x: float, y: float) -> EffectivePSF:
        psfs, w = [], []
        for j, wy in _weights(y, FIELD_NODES):
            for k, wx in _weights(x, FIELD_NODES):
                if wy * wx > 0:
                    psfs.append(lattice_epsf(self.epsf_at, self.focus, self.step, j, k))
                    w.append(wy * wx)
        return psfs[0] if len(psfs) == 1 else EffectivePSF.interpolate(psfs, w)

    def at(self, cell: int) -> EffectivePSF:
        """The ePSF at the centre of ``cell`` (row-major index), cached."""
        if cell not in self._cache:
            size = CHIP_PX / self.cells
            cy, cx = divmod(int(cell), self.cells)
            self._cache[cell] = self._at_position((cx + 0.5) * size - 0.5, (cy + 0.5) * size - 0.5)
        return self._cache[cell]

    def groups(self, x, y) -> dict[int, np.ndarray]:
        """{cell: indices of the stars at (x, y) px in it}."""
        size = CHIP_PX / self.cells
        cx = np.clip(np.floor((np.asarray(x, float) + 0.5) / size), 0, self.cells - 1)
        cy = np.clip(np.floor((np.asarray(y, float) + 0.5) / size), 0, self.cells - 1)
        cell = (cy * self.cells + cx).astype(int)
        return {int(c): np.flatnonzero(cell == c) for c in np.unique(cell)}


def fit_grouped(image, ix, iy, epsf, *args, **kwargs) -> FitResult:
    """:func:`fit_stars` with a :class:`FieldEPSF` (each offset group with its ePSF) or an
    EffectivePSF (one call). Per-star arguments (``saturated``, ``sky``, ``start``, the
    neighbours' x, y and flux) are split with the stars."""
    if not isinstance(epsf, FieldEPSF):
        return fit_stars(image, ix, iy, epsf, *args, **kwargs)
    ix, iy = np.asarray(ix, int), np.asarray(iy, int)
    out = FitResult(*(np.full(ix.size, np.nan) for _ in range(5)), np.zeros(ix.size, np.int32), 0)
    for q, idx in epsf.groups(ix, iy).items():
        sub = {k: _take(v, idx) for k, v in kwargs.items()}
        r = fit_stars(image, ix[idx], iy[idx], epsf.at(q), *(_take(a, idx) for a in args), **sub)
        for name in ("x", "y", "flux", "sky", "q", "flags"):
            getattr(out, name)[idx] = getattr(r, name)
        out.n_iter = max(out.n_iter, r.n_iter)
    return out


def model_grouped(shape, x, y, flux, epsf) -> np.ndarray:
    """:func:`model_image` with a :class:`FieldEPSF` (each group with its ePSF) or an EffectivePSF."""
    if not isinstance(epsf, FieldEPSF):
        return model_image(shape, x, y, flux, epsf)
    x, y, flux = (np.asarray(a, float) for a in (x, y, flux))
    out = np.zeros(shape)
    for q, idx in epsf.groups(x, y).items():
        out += model_image(shape, x[idx], y[idx], flux[idx], epsf.at(q))
    return out


def _take(value, idx):
    """The stars ``idx`` of a per-star keyword argument (arrays, FitResult, neighbours tuple)."""
    if value is None or np.isscalar(value) or isinstance(value, bool):
        return value
    if isinstance(value, FitResult):
        return FitResult(*(getattr(value, k)[idx] for k in ("x", "y", "flux", "sky", "q", "flags")),
                         value.n_iter)
    if isinstance(value, tuple):  # neighbours: (model image, x, y, flux)
        return (value[0],) + tuple(np.asarray(v)[idx] for v in value[1:])
    arr = np.asarray(value)
    return arr[idx] if arr.ndim == 1 else value
