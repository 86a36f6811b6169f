"""Physical-optics WFPC2 ePSFs with poppy, cached on disk by their parameters.

The model: HST's 2.4 m primary with the OTA secondary obscuration, four spiders and three
primary-mirror pads, the WFPC2 camera's own (rotated) obscuration, chip Zernike aberrations
(plus focus from secondary-mirror despace), polychromatic over the filter band. The PSF is
computed by poppy on a grid ``FINE`` times finer than the detector pixel, integrated over the
pixel (trapezoid box), decimated to the 4x ePSF grid and convolved with the charge-diffusion
kernel, which gives the ePSF of Anderson & King (2000). All numbers come from
:mod:`cubes.constants`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve

from starcenter.cubes import constants as C
from starcenter.cubes import schema
from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import BadArgumentError

#: Fine sampling of the poppy PSF per detector pixel (must be a multiple of the oversampling).
FINE = 8
#: Number of wavelengths sampling the filter band.
N_WAVELENGTHS = 5
#: Bump when the optical model changes, so cached ePSFs are recomputed.
MODEL_VERSION = "2"


@dataclass(frozen=True)
class PSFParams:
    """Everything that determines one ePSF (the cache key).

    despace_um : secondary-mirror despace relative to the nominal focus, microns (+ or -).
    position : chip pixel (x, y) for a field-dependent PSF, or None for the chip centre.
    """

    chip: str
    filter: str
    despace_um: float = 0.0
    position: tuple[float, float] | None = None
    n_wavelengths: int = N_WAVELENGTHS
    size_px: int = schema.EPSF_SIZE_PX
    oversampling: int = schema.OVERSAMPLING
    model_version: str = MODEL_VERSION

    def __post_init__(self):
        if self.chip not in C.CHIPS:
            raise BadArgumentError(f"unknown chip {self.chip!r}; expected one of {C.CHIPS}")
        if self.filter not in C.FILTERS:
            raise BadArgumentError(f"unknown filter {self.filter!r}; expected one of {tuple(C.FILTERS)}")

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_dir() -> Path:
    """Directory of cached ePSFs: $STARCENTER_CACHE or ~/.cache/starcenter/epsf."""
    root = os.environ.get("STARCENTER_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "starcenter"
    return base / "epsf"


def band_sampling(filter_name: str, n: int = N_WAVELENGTHS) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths (m) and normalized weights sampling a filter band for a G5V star.

    The throughput is approximated as a flat top between the half-power points of the band
    (pivot, FWHM from constants.FILTERS) with cosine shoulders, times the photon spectrum of
    a 5700 K blackbody; n wavelengths at the centres of n equal slices of the FWHM.
    """
    pivot, fwhm = C.FILTERS[filter_name]
    edges = np.linspace(pivot - fwhm / 2, pivot + fwhm / 2, n + 1)
    lam_nm = 0.5 * (edges[1:] + edges[:-1])
    lam = lam_nm * 1e-9
    h, c, k, T = 6.626e-34, 2.998e8, 1.381e-23, 5700.0
    photons = lam**-4 / np.expm1(h * c / (lam * k * T))  # B_lambda * lambda / (h c)
    w = photons / photons.sum()
    return lam, w


def zernike_coefficients(params: PSFParams) -> np.ndarray:
    """Noll-ordered Zernike coefficients in metres rms (index 0 = Noll 1, piston)."""
    tt = dict(C.CENTRE_ZERNIKES[params.chip])
    if params.position is not None:
        # Z4, Z7, Z8, Z5, Z6 interpolated linearly from TinyTim's five field points
        pts = np.array(C.FIELD_ZERNIKES[params.chip], float)
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        for col, z in zip(range(2, 7), (4, 7, 8, 5, 6)):
            lin = LinearNDInterpolator(pts[:, :2], pts[:, col])
            v = float(lin(*params.position))
            if not np.isfinite(v):  # outside the five points' hull: nearest value
                v = float(NearestNDInterpolator(pts[:, :2], pts[:, col])(*params.position))
            tt[z] = v
    tt[4] = tt.get(4, 0.0) + C.DESPACE_TO_Z4_WAVES * params.despace_um
    coeffs = np.zeros(23)
    for z, waves in tt.items():
        coeffs[C.TINYTIM_TO_NOLL[z] - 1] = waves * C.ZERNIKE_WAVELENGTH_M
    return coeffs


def optical_system(params: PSFParams, fine: int = FINE, coefficients=None):
    """The poppy optical system (pupil, aberrations, detector at ``fine`` x sampling);
    ``coefficients``: Noll-ordered Zernikes (m rms) instead of :func:`zernike_coefficients`."""
    import astropy.units as u
    import poppy

    R = C.PRIMARY_RADIUS_M
    optics = [
        poppy.CircularAperture(radius=R * u.m),
        poppy.SecondaryObscuration(secondary_radius=C.OTA_SECONDARY * R * u.m, n_supports=4,
                                   support_width=C.OTA_SPIDER_WIDTH * R * u.m),
    ]
    for v3, v2, r in C.OTA_PADS:
        optics.append(poppy.InverseTransmission(
            poppy.CircularAperture(radius=r * R * u.m, shift_x=v2 * R, shift_y=v3 * R)))
    sec, spider, rot = C.CAMERA_OBSCURATION[params.chip]
    optics.append(poppy.SecondaryObscuration(secondary_radius=sec * R * u.m, n_supports=4,
                                             support_width=spider * R * u.m, rotation=rot))
    osys = poppy.OpticalSystem(name=f"HST+WFPC2 {params.chip}", oversample=2, npix=512)
    osys.add_pupil(poppy.CompoundAnalyticOptic(opticslist=optics, name="HST+WFPC2 pupil"))
    zern = zernike_coefficients(params) if coefficients is None else coefficients
    osys.add_pupil(poppy.ZernikeWFE(coefficients=list(zern),
                                    radius=R * u.m))
    scale = C.PIXEL_SCALE[params.chip]
    osys.add_detector(pixelscale=scale / fine, fov_pixels=params.size_px * fine + 1, oversample=1)
    return osys


def compute_epsf(params: PSFParams, fine: int = FINE) -> EffectivePSF:
    """Compute an ePSF with poppy (about 0.3 s per wavelength); see :func:`get_epsf`."""
    if fine % params.oversampling:
        raise BadArgumentError(f"fine sampling {fine} must be a multiple of oversampling "
                               f"{params.oversampling}")
    return pixelate(fine_psf(params, fine), params.oversampling, fine)


def fine_psf(params: PSFParams, fine: int = FINE, coefficients=None) -> np.ndarray:
    """The polychromatic optical PSF on a grid ``fine`` times finer than a detector pixel
    ((size_px * fine + 1) samples a side, centred), each wavelength normalized to 1 at the
    entrance pupil; ``coefficients`` as in :func:`optical_system`."""
    osys = optical_system(params, fine, coefficients)
    psf = np.zeros((params.size_px * fine + 1,) * 2)
    for lam, w in zip(*band_sampling(params.filter, params.n_wavelengths)):
        hdul = osys.calc_psf(wavelength=lam, normalize="first")
        psf += w * hdul[0].data
    return psf


def pixelate(psf: np.ndarray, oversampling: int, fine: int = FINE, sensitivity=None) -> EffectivePSF:
    """The ePSF of a ``fine``-sampled optical PSF: integrated over the pixel (a trapezoid box one
    pixel wide; ``sensitivity``: a callable of the offset from the pixel centre, -0.5 ... 0.5 px,
    weighting the box separably in x and y, an intrapixel response whose mean is made 1),
    decimated to ``oversampling`` samples per pixel and convolved with the charge-diffusion kernel
    (constants.CHARGE_DIFFUSION, taps one pixel apart)."""
    os_ = oversampling
    box = np.ones(fine + 1)
    box[0] = box[-1] = 0.5
    if sensitivity is not None:
        box = box * sensitivity((np.arange(fine + 1) - fine / 2) / fine)
    box /= box.sum() if sensitivity is not None else fine
    integ = convolve(psf, box[None, :], mode="constant")
    integ = convolve(integ, box[:, None], mode="constant")
    step = fine // os_
    epsf = integ[::step, ::step]  # centre sample stays centred: (n-1) is a multiple of step
    kern = np.zeros((2 * os_ + 1,) * 2)
    kern[::os_, ::os_] = C.CHARGE_DIFFUSION
    epsf = convolve(epsf, kern, mode="constant")
    return EffectivePSF(epsf * edge_taper(epsf.shape, os_), os_).normalized()


#: Width (px) of the cosine taper that brings the ePSF smoothly to zero at the grid's
#: inscribed circle, so truncated wings of bright stars leave no square edges in images.
TAPER_PX = 3.0


def edge_taper(shape, oversampling: int, width_px: float = TAPER_PX) -> np.ndarray:
    """Radial cos^2 window: 1 inside R - width, 0 beyond R = the grid's half-width (px)."""
    ny, nx = shape
    yy, xx = np.indices(shape)
    r = np.hypot((xx - (nx - 1) / 2), (yy - (ny - 1) / 2)) / oversampling
    R = (min(shape) - 1) / 2 / oversampling
    t = np.clip((r - (R - width_px)) / width_px, 0, 1)
    return np.cos(0.5 * np.pi * t) ** 2


def cached_path(params: PSFParams) -> Path:
    """Where the ePSF of ``params`` is cached on disk."""
    return cache_dir() / f"{params.chip}_{params.filter}_{params.key()}.fits"


def get_epsf(params: PSFParams) -> EffectivePSF:
    """The ePSF for ``params``, from the disk cache or computed (and cached) with poppy."""
    from astropy.io import fits

    path = cached_path(params)
    if path.exists():
        try:
            with fits.open(path) as hdul:
                return EffectivePSF(hdul[0].data.astype(float), int(hdul[0].header["OVERSAMP"]))
        except (OSError, KeyError, ValueError):
            path.unlink(missing_ok=True)  # corrupt cache entry: recompute below
    epsf = compute_epsf(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU(epsf.data)
    hdu.header["OVERSAMP"] = epsf.oversampling
    hdu.header["CHIP"] = params.chip
    hdu.header["FILTER"] = params.filter
    hdu.header["DESPACE"] = (params.despace_um, "SM despace, micron")
    hdu.header["MODELVER"] = params.model_version
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    hdu.writeto(tmp, overwrite=True)
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written file
    return epsf


#: Spacing (um) of the true ePSF's focus nodes over a focus sweep (exposures interpolate linearly
#: between them); 1 um keeps a -10..+15 um sweep with the field-varying PSF at 28 x 9 ePSFs per chip.
SWEEP_NODE_UM = 1.0


@dataclass(frozen=True)
class PSFEpoch:
    """The PSF state of a data set: mean focus offset, breathing, optional field variation.

    focus_um : secondary-mirror despace of the data set relative to the library, microns.
    breathing_um : peak amplitude of per-exposure focus changes (orbital breathing), microns.
    field_varying : use aberrations varying across the chip (3x3 grid of ePSFs).
    sweep : per-exposure focus values (um) drawn from this list, or with ``sweep_range`` from
        the interval between its two values (then focus_um is unused).
    """

    focus_um: float = 0.0
    breathing_um: float = 0.0
    field_varying: bool = False
    focus_nodes: tuple[float, ...] = field(default=())
    sweep: tuple[float, ...] = ()
    sweep_range: bool = False

    def nodes(self) -> tuple[float, ...]:
        """Focus values (um) at which ePSFs are computed; exposures interpolate between them."""
        if self.sweep and self.sweep_range:
            lo = np.floor((min(self.sweep) - self.breathing_um) / SWEEP_NODE_UM)
            hi = np.ceil((max(self.sweep) + self.breathing_um) / SWEEP_NODE_UM)
            return tuple(np.round(np.arange(lo, hi + 1) * SWEEP_NODE_UM, 6))
        if self.sweep:
            return tuple(sorted({v for f in self.sweep for v in PSFEpoch(f, self.breathing_um).nodes()}))
        if self.breathing_um == 0:
            return (self.focus_um,)
        n = max(3, int(np.ceil(2 * self.breathing_um / 0.5)) + 1)  # <= 0.5 um apart
        return tuple(np.linspace(self.focus_um - self.breathing_um,
                                 self.focus_um + self.breathing_um, n).round(6))


#: Field nodes (chip pixel coordinates) of the field-varying PSF grid.
FIELD_NODES = (100.0, 400.0, 700.0)
