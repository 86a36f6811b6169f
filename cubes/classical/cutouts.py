"""Rasters: n x n cutouts normalized to sum 1 (paper sec. 3), on arrays.

Raster convention: pixel (ry, rx) of a raster is chip pixel (corner_y + ry, corner_x + rx) with
corner = round(position) - size // 2; targets are positions minus the corner in the schema
pixel convention, so a target lies in [size//2 - 0.5, size//2 + 0.5).
"""

from __future__ import annotations

import numpy as np


def cut(image: np.ndarray, x, y, size: int):
    """Rasters around positions, normalized to sum 1 (the paper's input).

    Parameters
    ----------
    image : numpy.ndarray
        One chip image (DN), schema pixel convention.
    x, y : array_like
        Positions (px) to cut around.
    size : int
        Raster side (px).

    Returns
    -------
    rasters : numpy.ndarray (n, size, size) float32
        Normalized to sum 1; zeros where invalid.
    corners : numpy.ndarray (n, 2) int
        Chip pixel (x, y) of raster pixel (0, 0): round(position) - size // 2.
    ok : numpy.ndarray (n,) bool
        Inside the image, finite and with a positive sum.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    cx = np.floor(x + 0.5).astype(int) - size // 2
    cy = np.floor(y + 0.5).astype(int) - size // 2
    k = np.arange(size)
    px = cx[:, None, None] + k[None, None, :]
    py = cy[:, None, None] + k[None, :, None]
    px, py = np.broadcast_arrays(px, py)
    inside = (cx >= 0) & (cy >= 0) & (cx + size <= image.shape[1]) & (cy + size <= image.shape[0])
    r = np.zeros(px.shape, np.float64)
    r[inside] = image[py[inside], px[inside]]
    s = r.sum(axis=(1, 2))
    ok = inside & np.isfinite(s) & (s > 0)
    r[ok] /= s[ok, None, None]
    r[~ok] = 0.0
    return r.astype(np.float32), np.stack([cx, cy], axis=-1), ok
