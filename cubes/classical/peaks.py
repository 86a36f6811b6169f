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

from starcenter.cubes import constants as C

#: Box (px) of the local-sky mesh (photutils Background2D), and its median filter size.
SKY_BOX = 32
SKY_FILTER = 5


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


def local_sky(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Sky map (DN): once 3-sigma-clipped medians in SKY_BOX meshes, median-filtered over
    SKY_FILTER meshes and interpolated linearly (photutils Background2D).

    Measured on the real ω Cen WF3 chip (image median 2.2 DN, box medians mostly 0-5 DN): with
    photutils 3.0's iterated clipping (maxiters=10) the mesh median came out at 18.4 DN, with
    diagonal bands, while a single clipping pass gives 2.0 DN; and the default bicubic
    interpolation rings around the garbage at real chip edges, so it is linear here."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    bkg = Background2D(image, SKY_BOX, filter_size=SKY_FILTER, mask=mask,
                       sigma_clip=SigmaClip(sigma=3.0, maxiters=1), bkg_estimator=MedianBackground())
    mesh = bkg.background_mesh
    zoom = (image.shape[0] / mesh.shape[0], image.shape[1] / mesh.shape[1])
    return ndimage.zoom(mesh, zoom, order=1, mode="nearest", grid_mode=True)[: image.shape[0], : image.shape[1]]


def find_peaks(image: np.ndarray, dq: np.ndarray | None = None, gain: float = 7.0,
               read_noise: float = 5.0, threshold: float = 5.0, min_separation: float = 2.0,
               saturation_dn: float | None = None, border: int = 2, epsf=None,
               wing_radius: float = 10.0) -> Peaks:
    """Local maxima (3x3) whose height above the local sky exceeds ``threshold`` sigma.

    sigma per pixel (DN) is the noise model: sqrt((max(sky, 0) + max(image - sky, 0)) * gain
    + read_noise^2) / gain -- not the box-to-box scatter, which crowding inflates (x20 on the real
    ω Cen WF chips). Of two peaks closer
    than ``min_separation`` px the fainter is dropped. A peak is saturated when a pixel of its
    3x3 core is flagged A/D-saturated in ``dq`` (or reaches ``saturation_dn``); all maxima in a
    saturated star's core and bleed columns collapse into its brightest pixel.

    With an ``epsf``, a peak must also stand ``threshold`` sigma above the wings that ``epsf``
    predicts from brighter detections within ``wing_radius`` px (fluxes from 7x7 aperture sums):
    this removes the bumps along diffraction spikes and rings that hst1pass also rejects.

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
    sky = local_sky(np.where(bad, np.nanmedian(img), img), mask=bad | sat_pix)
    above = work - sky
    sigma = np.sqrt((np.clip(sky, 0, None) + np.clip(above, 0, None)) * gain + read_noise**2) / gain
    is_max = (work == ndimage.maximum_filter(work, size=3, mode="nearest")) & (above > threshold * sigma)
    if border > 0:
        is_max[:border] = is_max[-border:] = False
        is_max[:, :border] = is_max[:, -border:] = False
    y, x = np.nonzero(is_max)
    h = above[y, x]
    x, y, h, sat = _merge_saturated(x, y, h, sat_pix)
    x, y, h, sat = _separate(x, y, h, sat, min_separation)
    if epsf is not None and x.size:
        keep = sat | (_sharpness(above, x, y) <= SHARPNESS_MARGIN * _sharpness_limit(epsf)
                      + threshold * sigma[y, x] / np.maximum(h, 1e-12))
        x, y, h, sat = x[keep], y[keep], h[keep], sat[keep]
    if epsf is not None and x.size > 1:
        keep = _above_wings(work, sky, x, y, h, sigma[y, x], epsf, threshold, wing_radius)
        x, y, h, sat = x[keep], y[keep], h[keep], sat[keep]
    return Peaks(x, y, h, sky[y, x], sigma[y, x], sat)


def _merge_saturated(x, y, h, sat_pix):
    """Saturated stars: the connected saturated region (core + bleed columns, dilated by 1 px)
    is one star, detected once at its brightest local maximum. Returns x, y, h, saturated."""
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
    return x, y, h, sat


def _separate(x, y, h, sat, min_separation: float):
    """Sorted brightest first; of two peaks closer than ``min_separation`` px the fainter goes."""
    order = np.argsort(-h)
    x, y, h, sat = x[order], y[order], h[order], sat[order]
    if x.size > 1 and min_separation > 0:
        tree = cKDTree(np.c_[x, y])
        drop = np.zeros(x.size, bool)
        for i, j in sorted(tree.query_pairs(min_separation)):
            if not drop[i]:
                drop[j] = True  # j is fainter (sorted by height)
        x, y, h, sat = x[~drop], y[~drop], h[~drop], sat[~drop]
    return x, y, h, sat


#: A peak sharper than the ePSF allows (ratio of the peak to the mean of its 4 neighbours, above
#: sky) by this factor is a cosmic ray or hot pixel, not a star (hst1pass rejects them too).
#: Generous because real WF stars are sharper than the nominal model: on ω Cen WF3 the bright
#: stars' ratios have median 3.7 and 90th percentile 5.2 against the library's 3.3.
SHARPNESS_MARGIN = 2.0


def _sharpness(above, x, y):
    """Peak over the mean of its four edge neighbours, all above sky."""
    ny, nx = above.shape
    nb = (above[np.clip(y - 1, 0, ny - 1), x] + above[np.clip(y + 1, 0, ny - 1), x]
          + above[y, np.clip(x - 1, 0, nx - 1)] + above[y, np.clip(x + 1, 0, nx - 1)]) / 4
    nb = np.where(np.isfinite(nb), nb, 0.0)
    return above[y, x] / np.maximum(nb, 1e-3 * np.abs(above[y, x]) + 1e-12)


def _sharpness_limit(epsf) -> float:
    """The largest peak/neighbour ratio a star can show: star centred on a pixel."""
    st = epsf.pixel_stamp(0, 0, half=1)
    return float(st[1, 1] / ((st[0, 1] + st[2, 1] + st[1, 0] + st[1, 2]) / 4))


def _above_wings(img, sky, x, y, h, sig, epsf, threshold, radius):
    """Mask of peaks (sorted brightest first) whose height exceeds, by ``threshold`` sigma, the
    ePSF wings of brighter peaks within ``radius``."""
    half = 3
    box = np.zeros(x.size)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            yy = np.clip(y + dy, 0, img.shape[0] - 1)
            xx = np.clip(x + dx, 0, img.shape[1] - 1)
            v = img[yy, xx] - sky[yy, xx]
            box += np.where(np.isfinite(v), v, 0.0)
    frac = epsf.pixel_stamp(0, 0, half=half).sum()
    flux = np.clip(box, 0, None) / frac
    pairs = cKDTree(np.c_[x, y]).query_pairs(radius, output_type="ndarray")
    wing = np.zeros(x.size)
    if pairs.size:
        i, j = pairs[:, 0], pairs[:, 1]  # i < j: i is the brighter (sorted by height)
        np.add.at(wing, j, flux[i] * epsf.evaluate(x[j] - x[i], y[j] - y[i]))
    return h - wing > threshold * sig
