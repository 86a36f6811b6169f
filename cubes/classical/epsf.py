"""The effective PSF (ePSF) shared by the simulator, the classical fitter and the Cramér–Rao code.

An ePSF (Anderson & King 2000) is the PSF already integrated over a pixel and convolved with the
detector's charge diffusion: its value at offset (dx, dy) is the fraction of a star's flux that
lands in the detector pixel whose centre lies at (dx, dy) pixels from the star. It is stored on a
grid supersampled ``oversampling`` times, centred on the middle sample, and interpolated with a
bicubic spline (the same interpolant photutils' ``ImagePSF`` uses, so conversions are exact).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.ndimage import map_coordinates, spline_filter

from starcenter.cubes.errors import BadArgumentError


class EffectivePSF:
    """An effective PSF on a supersampled grid.

    Parameters
    ----------
    data : array (ny, nx)
        ePSF samples; sample ``data[j, i]`` is the fraction of flux in a pixel centred at
        ``dx = (i - (nx - 1) / 2) / oversampling``, ``dy = (j - (ny - 1) / 2) / oversampling``
        detector pixels from the star. ``ny`` and ``nx`` must be odd (centre on a sample).
    oversampling : int
        Samples per detector pixel (4 for WFPC2 ePSFs).
    """

    def __init__(self, data, oversampling: int = 4):
        data = np.asarray(data, dtype=float)
        if data.ndim != 2 or data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
            raise BadArgumentError(f"ePSF grid must be 2-d with odd sides, got {data.shape}")
        if not np.all(np.isfinite(data)):
            raise BadArgumentError("ePSF grid contains NaN or infinite values")
        if int(oversampling) < 1:
            raise BadArgumentError(f"oversampling must be >= 1, got {oversampling}")
        self.data = data
        self.oversampling = int(oversampling)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def radius(self) -> float:
        """Half-width of the grid in detector pixels (values beyond are zero)."""
        return (min(self.data.shape) - 1) / 2 / self.oversampling

    @cached_property
    def _spline(self) -> RectBivariateSpline:
        ny, nx = self.data.shape
        gy = (np.arange(ny) - (ny - 1) / 2) / self.oversampling
        gx = (np.arange(nx) - (nx - 1) / 2) / self.oversampling
        return RectBivariateSpline(gy, gx, self.data, kx=3, ky=3, s=0)

    # -- evaluation -------------------------------------------------------------------------
    def _inside(self, dx, dy):
        r = self.radius
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)

    @cached_property
    def _coefficients(self) -> np.ndarray:
        return spline_filter(self.data, order=3, mode="mirror")

    def evaluate(self, dx, dy) -> np.ndarray:
        """Flux fraction in the pixel centred at offset (dx, dy) px from the star (0 outside)."""
        dx, dy = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float))
        ny, nx = self.data.shape
        # The same interpolating bicubic spline as ``_spline`` (they agree to 1e-15 of the
        # peak: only the boundary conditions differ, where the ePSF is ~0), evaluated with
        # ndimage on prefiltered coefficients: 0.12 s instead of 0.21 s per 1e6 points.
        out = map_coordinates(self._coefficients,
                              [dy.ravel() * self.oversampling + (ny - 1) / 2,
                               dx.ravel() * self.oversampling + (nx - 1) / 2],
                              order=3, prefilter=False, mode="mirror").reshape(dx.shape)
        return np.where(self._inside(dx, dy), out, 0.0)

    def gradient(self, dx, dy) -> tuple[np.ndarray, np.ndarray]:
        """Partial derivatives (d/d dx, d/d dy) of :meth:`evaluate`, per pixel of offset.

        The derivative with respect to the star's own position is the negative of these.
        """
        dx, dy = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float))
        inside = self._inside(dx, dy)
        gx = self._spline.ev(dy.ravel(), dx.ravel(), dx=0, dy=1).reshape(dx.shape)
        gy = self._spline.ev(dy.ravel(), dx.ravel(), dx=1, dy=0).reshape(dx.shape)
        return np.where(inside, gx, 0.0), np.where(inside, gy, 0.0)

    #: Samples of zeros beyond the mirrored border of :attr:`_padded`: any box with a pixel on
    #: the grid then lies wholly in the padded array (boxes up to 2 * 15 + 1 px at 4x).
    _FAR = 124

    @cached_property
    def _padded(self) -> np.ndarray:
        # the prefiltered coefficients extended by the 2 samples that map_coordinates' 'mirror'
        # rule reads beyond the grid (d c b | a b c d | c b a), then by zeros (box pixels that
        # far out are set to 0 anyway, as evaluate does beyond the radius)
        return np.pad(np.pad(self._coefficients, 2, mode="reflect"), self._FAR)

    def box(self, dx0, dy0, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Value and gradient of :meth:`evaluate` on whole pixel boxes, one per star.

        Star ``n``'s box holds the pixels at offsets ``(dx0[n] + i, dy0[n] + j)`` px from the
        star, ``i, j = -half .. half`` (box pixel ``[n, j + half, i + half]``): the fit box of a
        star at (x, y) around the integer pixel (ix, iy) has ``dx0 = ix - x``. Returns (value,
        d/d dx, d/d dy), each (n, 2 half + 1, 2 half + 1), equal to :meth:`evaluate` and
        :meth:`gradient` to ~1e-14 of the peak (the same bicubic spline; :meth:`gradient`'s
        FITPACK spline differs only in its boundary rule, where the ePSF is ~0).

        Written here rather than calling scipy because all pixels of a box share one
        sub-sample phase: the B-spline weights are computed once per star and its coefficients
        are one contiguous window of the grid, contracted with two small matrix products.
        Measured on a WF3 chip (6,800 stars, 5x5 boxes): see benchmarks/bench_centering.py.
        """
        os_ = self.oversampling
        ny, nx = self.data.shape
        dx0, dy0 = np.asarray(dx0, float).ravel(), np.asarray(dy0, float).ravel()
        n, k = dx0.size, 2 * half + 1
        win = os_ * (k - 1) + 4  # coefficient samples one box spans, per axis
        coef = self._padded
        lim = self._FAR + 2
        pairs = []
        for d0, size, top in ((dx0, nx, coef.shape[1]), (dy0, ny, coef.shape[0])):
            u = (d0 - half) * os_ + (size - 1) / 2  # grid coordinate of the box's first pixel
            i0 = np.floor(np.clip(u, -lim, size + lim))
            t = u - i0
            # window start in the padded array: sample i0 - 1 of the grid
            start = np.clip(i0.astype(np.int64) - 1 + lim, 0, top - win)
            w = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1,
                          t**3], -1) / 6
            dw = np.stack([-(1 - t) ** 2, 3 * t**2 - 4 * t, -3 * t**2 + 2 * t + 1, t**2], -1) * (os_ / 2)
            pairs.append((start, np.stack([w, dw], -1)))  # weights (n, 4, 2): value, derivative
        (sx, wx), (sy, wy) = pairs
        g = np.lib.stride_tricks.sliding_window_view(coef, (win, win))[sy, sx]  # (n, win, win)
        if os_ != 4:  # win == 4 k only at 4x: elsewhere pick each pixel's 4 samples per axis
            pick = (os_ * np.arange(k)[:, None] + np.arange(4)[None, :]).ravel()
            g = g[:, pick][:, :, pick]
        a = g.reshape(n, k * 4 * k, 4) @ wx  # (n, ky*4*kx, 2): x contracted (value, d/dx)
        a = a.reshape(n, k, 4, k * 2).transpose(0, 1, 3, 2) @ wy[:, None]  # (n, ky, kx*2, 2)
        a = a.reshape(n, k, k, 2, 2)
        off = np.arange(k) - half
        r = self.radius
        inside = (np.abs(dy0[:, None, None] + off[None, :, None]) <= r) & \
            (np.abs(dx0[:, None, None] + off[None, None, :]) <= r)
        return (np.where(inside, a[..., 0, 0], 0.0), np.where(inside, a[..., 1, 0], 0.0),
                np.where(inside, a[..., 0, 1], 0.0))

    def pixel_stamp(self, phase_x: float = 0.0, phase_y: float = 0.0, half: int | None = None):
        """Detector-sampled image of a unit-flux star at sub-pixel phase (phase_x, phase_y).

        Returns an array (2*half+1, 2*half+1) whose centre pixel is the one nearest the star.
        """
        half = int(np.floor(self.radius)) if half is None else int(half)
        k = np.arange(-half, half + 1)
        return self.evaluate(k[None, :] - phase_x, k[:, None] - phase_y)

    # -- derived ePSFs ----------------------------------------------------------------------
    def normalized(self) -> EffectivePSF:
        """A copy whose every sub-pixel lattice sums to 1 (flux = flux within the grid)."""
        os = self.oversampling
        data = self.data.copy()
        ny, nx = data.shape
        cy, cx = (ny - 1) // 2, (nx - 1) // 2
        for py in range(os):
            for px in range(os):
                sl = (slice((cy + py) % os, None, os), slice((cx + px) % os, None, os))
                s = data[sl].sum()
                if s <= 0:
                    raise BadArgumentError("ePSF lattice with non-positive sum cannot be normalized")
                data[sl] /= s
        return EffectivePSF(data, os)

    @staticmethod
    def interpolate(psfs, weights) -> EffectivePSF:
        """Weighted sum of ePSFs on the same grid (focus or field interpolation)."""
        psfs = list(psfs)
        w = np.asarray(weights, float)
        data = np.tensordot(w, np.stack([p.data for p in psfs]), axes=1)
        return EffectivePSF(data, psfs[0].oversampling)

    # -- photutils interoperability ----------------------------------------------------------
    def to_imagepsf(self, flux: float = 1.0, x_0: float = 0.0, y_0: float = 0.0):
        """This ePSF as a photutils ``ImagePSF`` model (same grid, same bicubic interpolant)."""
        from photutils.psf import ImagePSF

        # photutils multiplies the interpolated data by flux and expects each sub-lattice of
        # an oversampled ePSF to sum to 1, exactly as starcenter's grid.
        return ImagePSF(self.data, flux=flux, x_0=x_0, y_0=y_0, oversampling=self.oversampling)

    @classmethod
    def from_imagepsf(cls, model, size_px: int | None = None) -> EffectivePSF:
        """Build from a photutils ``ImagePSF`` by sampling it on a centred odd grid.

        The model is evaluated (unit flux, centred at its origin) at the offsets of a
        ``size_px``-pixel grid with the model's oversampling, so an even-sided photutils grid
        or a non-central ``origin`` is handled exactly.
        """
        os = np.atleast_1d(model.oversampling)
        if os.size == 2 and os[0] != os[1]:
            raise BadArgumentError(f"anisotropic oversampling {tuple(os)} is not supported")
        os = int(os[0])
        if size_px is None:
            size_px = int(np.ceil(max(model.data.shape) / os)) | 1
        n = size_px * os + 1
        off = (np.arange(n) - (n - 1) / 2) / os
        dx, dy = np.meshgrid(off, off)
        x0, y0 = float(model.x_0.value), float(model.y_0.value)
        data = model.evaluate(dx + x0, dy + y0, 1.0, x0, y0)
        return cls(np.nan_to_num(np.asarray(data, float), nan=0.0), os)

    def __repr__(self) -> str:
        return f"EffectivePSF(shape={self.shape}, oversampling={self.oversampling})"
