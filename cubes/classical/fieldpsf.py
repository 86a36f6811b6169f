"""An ePSF that varies over the chip, and fits with it (kernels on arrays).

A WFPC2 chip's PSF is not one PSF: TinyTim's field-dependent aberrations move its best focus by
up to ~2 um-equivalent of secondary-mirror despace between centre and corners (PC1), and WF3's
astigmatism and coma change by more than its focus term across the chip. A :class:`FieldEPSF` is
the physical model at one secondary-mirror despace over the whole chip: node ePSFs on a 3x3 grid
of chip positions (the simulator's own field nodes), each linear in focus between the nodes of
a focus lattice, and every star's ePSF bilinear between the four nodes around it (clamped
outside them), as the simulator renders it. Stars are grouped by those four nodes and each
group fitted at once with per-star weights (:class:`StarsEPSF`, :func:`fit_grouped`).

Measured (SIMULATION, WF3 at +2..13 um with the field-varying PSF, 3e4-1e5 e- isolated stars):
the per-star interpolation gives 5.6 mpix robust error where one ePSF per cell of a 6x6 (12x12,
24x24) split gave 10.1 (7.6, 6.1) mpix; the Cramér–Rao bound is 4.8 mpix.
"""

from __future__ import annotations

import numpy as np

from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.classical.psffit import FLAGS, PER_STAR, FitResult, fit_stars, model_image

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


def _cell(c) -> np.ndarray:
    """Index (0 or 1) of the node interval a coordinate (px) falls in."""
    return (np.asarray(c, float) >= FIELD_NODES[1]).astype(int)


def _weights(c, i) -> tuple[np.ndarray, np.ndarray]:
    """Linear weights of coordinates ``c`` (px) on nodes i and i + 1 (clamped to the nodes)."""
    lo, hi = np.asarray(FIELD_NODES)[i], np.asarray(FIELD_NODES)[i + 1]
    t = np.clip((np.asarray(c, float) - lo) / (hi - lo), 0.0, 1.0)
    return 1 - t, t


class StarsEPSF:
    """The ePSFs of a set of stars, each a weighted sum of the same node ePSFs: ``box`` and
    ``evaluate`` as :class:`EffectivePSF`'s, per star; ``subset(a)`` the stars ``a``."""

    def __init__(self, nodes, weights: np.ndarray):
        self.nodes, self.weights = list(nodes), np.asarray(weights, float)
        self.oversampling = self.nodes[0].oversampling
        self.radius = self.nodes[0].radius

    def subset(self, a) -> StarsEPSF:
        return StarsEPSF(self.nodes, self.weights[a])

    def box(self, dx0, dy0, half: int):
        out = None
        for k, node in enumerate(self.nodes):
            w = self.weights[:, k][:, None, None]
            if not w.any():
                continue
            parts = node.box(dx0, dy0, half)
            out = [w * p for p in parts] if out is None else [o + w * p for o, p in zip(out, parts)]
        return tuple(out)

    def evaluate(self, dx, dy) -> np.ndarray:
        shape = (-1,) + (1,) * (np.ndim(dx) - 1)
        return sum(self.weights[:, k].reshape(shape) * node.evaluate(dx, dy)
                   for k, node in enumerate(self.nodes) if self.weights[:, k].any())


class FieldEPSF:
    """The model's ePSF of one chip at despace ``focus`` (um) anywhere on the chip.

    ``epsf_at(f, j, k)`` gives the node ePSF at lattice focus ``f`` (um) and field node
    (FIELD_NODES[k], FIELD_NODES[j]) (x, y); ``step`` is the lattice spacing (um). ``centre`` is
    the ePSF at the chip centre (peak finding uses it).
    """

    def __init__(self, epsf_at, focus: float, step: float = 1.0):
        self.epsf_at, self.focus, self.step = epsf_at, float(focus), step
        self._nodes: dict[tuple[int, int], EffectivePSF] = {}
        self.centre = self.node(1, 1)
        self.oversampling = self.centre.oversampling

    def node(self, j: int, k: int) -> EffectivePSF:
        """The ePSF at field node (j, k) (y, x), at this focus (cached)."""
        if (j, k) not in self._nodes:
            self._nodes[j, k] = lattice_epsf(self.epsf_at, self.focus, self.step, j, k)
        return self._nodes[j, k]

    def groups(self, x, y) -> dict[int, np.ndarray]:
        """{quadrant (2 cy + cx): indices of the stars at (x, y) px between its four nodes}."""
        q = 2 * _cell(y) + _cell(x)
        return {int(v): np.flatnonzero(q == v) for v in np.unique(q)}

    def for_stars(self, quadrant: int, x, y) -> StarsEPSF:
        """The ePSFs of stars at (x, y) px of one quadrant: bilinear between its four nodes."""
        cy, cx = divmod(int(quadrant), 2)
        (wy0, wy1), (wx0, wx1) = _weights(y, cy), _weights(x, cx)
        nodes = [self.node(cy + a, cx + b) for a in (0, 1) for b in (0, 1)]
        return StarsEPSF(nodes, np.column_stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1]))


def evaluate_at(epsf, x, y, dx, dy) -> np.ndarray:
    """ePSF values at offsets (dx, dy) (n, ...) px from stars at (x, y) px: each star's own
    ePSF of a :class:`FieldEPSF`, or the one EffectivePSF's."""
    if not isinstance(epsf, FieldEPSF):
        return epsf.evaluate(dx, dy)
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = np.empty(np.shape(dx))
    for q, idx in epsf.groups(x, y).items():
        out[idx] = epsf.for_stars(q, x[idx], y[idx]).evaluate(np.asarray(dx)[idx], np.asarray(dy)[idx])
    return out


def fit_grouped(image, ix, iy, epsf, *args, **kwargs) -> FitResult:
    """:func:`fit_stars` with a :class:`FieldEPSF` (each offset group with its ePSF) or an
    EffectivePSF (one call). Per-star arguments (``saturated``, ``sky``, ``start``, the
    neighbours' x, y and flux) are split with the stars."""
    if not isinstance(epsf, FieldEPSF):
        return fit_stars(image, ix, iy, epsf, *args, **kwargs)
    ix, iy = np.asarray(ix, int), np.asarray(iy, int)
    out = FitResult(*(np.full(ix.size, np.nan) for _ in range(5)), np.zeros(ix.size, np.int32), 0,
                    *(np.full(ix.size, np.inf) for _ in range(3)))
    for q, idx in epsf.groups(ix, iy).items():
        sub = {k: _take(v, idx) for k, v in kwargs.items()}
        psf = epsf.for_stars(q, ix[idx], iy[idx])
        r = fit_stars(image, ix[idx], iy[idx], psf, *(_take(a, idx) for a in args), **sub)
        for name in PER_STAR:
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
        out += model_image(shape, x[idx], y[idx], flux[idx], epsf.for_stars(q, x[idx], y[idx]))
    return out


#: Fit flags of a star left out of a neighbour model: its flux or position cannot be trusted.
UNMODELLED = FLAGS["saturated"] | FLAGS["not_converged"] | FLAGS["nonpositive_flux"]


def modelled(x, y, flux, flags) -> np.ndarray:
    """Which fitted stars go into a neighbour model: finite, positive flux, none of UNMODELLED."""
    x, y, flux = (np.asarray(a, float) for a in (x, y, flux))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux > 0)
    return ok & ((np.asarray(flags) & UNMODELLED) == 0)


def neighbour_free(image, x, y, flux, use, own, corners, epsf, size: int):
    """Rasters of ``image`` less the ePSF model of every fitted star but the raster's own.

    Parameters
    ----------
    image : numpy.ndarray
        One chip image (DN), schema pixel convention.
    x, y, flux : numpy.ndarray
        The chip's fitted stars (px, DN): the detections.
    use : numpy.ndarray of bool
        The stars modelled (:func:`modelled`).
    own : numpy.ndarray of int
        Per raster, the index of its own star in ``x`` (-1: none; it is then not taken out).
    corners : numpy.ndarray (n, 2) int
        Chip pixel (x, y) of raster pixel (0, 0), the raster inside the chip.
    epsf : EffectivePSF or FieldEPSF
        The ePSF the stars were fitted with.
    size : int
        Raster side (px).

    Returns
    -------
    rasters : numpy.ndarray (n, size, size) float32
        Normalized to sum 1 (as :func:`starcenter.cubes.classical.cutouts.cut`); zeros where not ok.
    ok : numpy.ndarray (n,) bool
        Finite with a positive sum.
    """
    image = np.asarray(image, float)
    x, y, flux = (np.asarray(a, float) for a in (x, y, flux))
    model = model_grouped(image.shape, x[use], y[use], flux[use], epsf)
    k = np.arange(size)
    px = np.broadcast_to(corners[:, 0, None, None] + k[None, None, :], (len(own), size, size))
    py = np.broadcast_to(corners[:, 1, None, None] + k[None, :, None], (len(own), size, size))
    box = image[py, px] - model[py, px]
    mine = np.flatnonzero(own >= 0)
    mine = mine[use[own[mine]]]  # its own model back in
    o = own[mine]
    box[mine] += evaluate_at(epsf, x[o], y[o], px[mine] - x[o, None, None], py[mine] - y[o, None, None]) \
        * flux[o, None, None]
    s = box.sum(axis=(1, 2))
    ok = np.isfinite(s) & (s > 0)
    out = np.zeros(box.shape, np.float32)
    out[ok] = box[ok] / s[ok, None, None]
    return out, ok


def _take(value, idx):
    """The stars ``idx`` of a per-star keyword argument (arrays, FitResult, neighbours tuple)."""
    if value is None or np.isscalar(value) or isinstance(value, bool):
        return value
    if isinstance(value, FitResult):
        return FitResult(**{k: None if getattr(value, k) is None else getattr(value, k)[idx]
                            for k in PER_STAR}, n_iter=value.n_iter)
    if isinstance(value, tuple):  # neighbours: (model image, x, y, flux)
        return (value[0],) + tuple(np.asarray(v)[idx] for v in value[1:])
    arr = np.asarray(value)
    return arr[idx] if arr.ndim == 1 else value
