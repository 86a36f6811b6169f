"""Star detection on one chip image: local maxima above a threshold over the local sky.

The hst1pass stand-in's first step. Positions are integer peak pixels (schema convention);
the ePSF fit (:mod:`cubes.psffit`) refines them. Saturated stars are found and flagged
(hst1pass gives them q = 0), and the many maxima along a bleed trail collapse into one star.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from . import constants as C

#: Box (px) of the local-sky mesh (photutils Background2D), and its median filter size.
SKY_BOX = 32
SKY_FILTER = 3


@dataclass
class Peaks:
    """Detections of one chip: integer peak pixel (x, y), peak height above sky (DN), the
    local sky (DN) and its noise (DN), and a saturated flag."""

    x: np.ndarray
    y: np.ndarray
    height: np.ndarray
    sky: np.ndarray
    noise: np.ndarray
    saturated: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)


def local_sky(image: np.ndarray, mask: np.ndarray | None = None):
    """Sky and sky-noise maps (DN) from sigma-clipped medians in SKY_BOX meshes (photutils)."""
    from photutils.background import Background2D, MedianBackground

    bkg = Background2D(image, SKY_BOX, filter_size=SKY_FILTER, mask=mask,
                       bkg_estimator=MedianBackground())
    return bkg.background, bkg.background_rms


def find_peaks(image: np.ndarray, dq: np.ndarray | None = None, gain: float = 7.0,
               read_noise: float = 5.0, threshold: float = 5.0, min_separation: float = 2.0,
               saturation_dn: float | None = None, border: int = 2) -> Peaks:
    """Local maxima (3x3) whose height above the local sky exceeds ``threshold`` sigma.

    sigma per pixel = sqrt(sky_noise^2 + max(image - sky, 0) / gain) in DN. Of two peaks closer
    than ``min_separation`` px the fainter is dropped. A peak is saturated when a pixel of its
    3x3 core is flagged A/D-saturated in ``dq`` (or reaches ``saturation_dn``); all maxima in a
    saturated star's core and bleed columns collapse into its brightest pixel.

    NaN or non-finite pixels are never detected (they are masked from the sky too).
    """
    img = np.asarray(image, float)
    bad = ~np.isfinite(img)
    sat_pix = np.zeros(img.shape, bool)
    if dq is not None:
        sat_pix |= (np.asarray(dq) & (C.DQ_FLAGS["ad_saturation"] | C.DQ_FLAGS["bleeding"])) > 0
    if saturation_dn is not None:
        sat_pix |= np.nan_to_num(img, nan=-np.inf) >= saturation_dn
    work = np.where(bad, -np.inf, img)
    if bad.all():
        empty = np.zeros(0)
        return Peaks(empty.astype(int), empty.astype(int), empty, empty, empty, empty.astype(bool))
    sky, sky_rms = local_sky(np.where(bad, np.nanmedian(img), img), mask=bad | sat_pix)
    above = work - sky
    sigma = np.sqrt(sky_rms**2 + np.clip(above, 0, None) / gain)
    is_max = (work == ndimage.maximum_filter(work, size=3, mode="nearest")) & (above > threshold * sigma)
    is_max[:border] = is_max[-border:] = False
    is_max[:, :border] = is_max[:, -border:] = False
    y, x = np.nonzero(is_max)
    h = above[y, x]
    # saturated stars: the connected saturated region (core + bleed columns, dilated by 1 px)
    # is one star, detected once at its brightest local maximum
    sat = np.zeros(x.size, bool)
    if sat_pix.any():
        labels, _ = ndimage.label(ndimage.binary_dilation(sat_pix, iterations=2))
        lab = labels[y, x]
        sat = lab > 0
        keep = ~sat
        for L in np.unique(lab[sat]):
            idx = np.flatnonzero(lab == L)
            keep[idx[np.argmax(h[idx])]] = True
        x, y, h, sat = x[keep], y[keep], h[keep], sat[keep]
    # minimum separation: drop the fainter of close pairs
    order = np.argsort(-h)
    x, y, h, sat = x[order], y[order], h[order], sat[order]
    if x.size > 1 and min_separation > 0:
        tree = cKDTree(np.c_[x, y])
        drop = np.zeros(x.size, bool)
        for i, j in sorted(tree.query_pairs(min_separation)):
            if not drop[i]:
                drop[j] = True  # j is fainter (sorted by height)
        x, y, h, sat = x[~drop], y[~drop], h[~drop], sat[~drop]
    return Peaks(x, y, h, sky[y, x], sigma[y, x], sat)
