"""Rasters: n x n cutouts normalized to sum 1 (paper sec. 3), on arrays.

Raster convention: pixel (ry, rx) of a raster is chip pixel (corner_y + ry, corner_x + rx) with
corner = round(position) - size // 2; targets are positions minus the corner in the schema
pixel convention, so a target lies in [size//2 - 0.5, size//2 + 0.5).
"""

from __future__ import annotations

import numpy as np


def cut(image: np.ndarray, x, y, size: int):
    """Rasters (n, size, size) around positions (x, y), their integer corners (n, 2) (x, y) and
    a validity mask (inside the image, finite, positive sum). Normalized to sum 1."""
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
