"""WFPC2 detector and optics numbers, each with its source.

Every physical constant the simulator, the readers and the fitters use lives here, so that a
reviewer can check them against the cited documents in one place. Units are in the names or
the comments: pixels (px), arcseconds ("), electrons (e-), data numbers (DN), waves rms at
547 nm for Zernike coefficients.
"""

from __future__ import annotations

import numpy as np

#: Chip names in DETECTOR order (header keyword DETECTOR = 1..4). WFPC2 Instrument Handbook.
CHIPS: tuple[str, ...] = ("PC1", "WF2", "WF3", "WF4")
#: DETECTOR number of each chip.
DETECTOR_NUMBER: dict[str, int] = {"PC1": 1, "WF2": 2, "WF3": 3, "WF4": 4}
#: Side of every chip in pixels (800 x 800, 15 micron pixels). WFPC2 Instrument Handbook.
CHIP_SIZE = 800
#: Pixel scale in arcsec/px. TinyTim 7.5 wfpc2pc1.pup / wfpc2wf3.pup.
PIXEL_SCALE: dict[str, float] = {"PC1": 0.04555, "WF2": 0.09993, "WF3": 0.09993, "WF4": 0.09993}
#: Focal ratio. TinyTim 7.5.
FOCAL_RATIO: dict[str, float] = {"PC1": 28.3, "WF2": 12.9, "WF3": 12.9, "WF4": 12.9}

#: Gain (e-/DN) and read noise (e-) per chip for ATODGAIN 7 and 15.
#: drizzlepac wfpc2Data.py (WFPC2_GAINS).
GAIN: dict[int, dict[str, float]] = {
    7: {"PC1": 7.12, "WF2": 7.12, "WF3": 6.90, "WF4": 7.10},
    15: {"PC1": 13.99, "WF2": 14.50, "WF3": 13.95, "WF4": 13.95},
}
READ_NOISE: dict[int, dict[str, float]] = {
    7: {"PC1": 5.24, "WF2": 5.51, "WF3": 5.22, "WF4": 5.19},
    15: {"PC1": 7.02, "WF2": 7.84, "WF3": 6.99, "WF4": 8.32},
}
#: A/D converter saturation in raw DN (SATURATE = 4095 in real c0f headers,
#: e.g. u40x010hm_c0f.fits).
AD_SATURATION_DN = 4095
#: Full well in e-; charge beyond it blooms along columns. WFPC2 ISR 2001-07 ("more than
#: ~50,000 e-"); 53,000 e- is the value adopted here.
FULL_WELL_E = 53_000.0
#: Mean bias level in raw DN added before digitisation and removed by calibration (typical
#: WFPC2 bias ~ 300 DN; WFPC2 Data Handbook). Its exact value only matters for saturation.
BIAS_DN = 300.0
#: Dark current, e-/s/px at the -88 C operating temperature (WFPC2 Instrument Handbook: 0.0045).
DARK_RATE = 0.0045

#: Charge-diffusion ("pixel scattering") kernel at detector sampling. TinyTim .pup files.
CHARGE_DIFFUSION = np.array(
    [[0.0125, 0.05, 0.0125], [0.05, 0.75, 0.05], [0.0125, 0.05, 0.0125]], dtype=float
)

# ---------------------------------------------------------------------------------------------
# Optics (pupil sizes are fractions of the primary radius 1.2 m). TinyTim .pup files.
PRIMARY_RADIUS_M = 1.2
OTA_SECONDARY = 0.330
OTA_SPIDER_WIDTH = 0.022
#: OTA primary-mirror pads: (V3, V2, radius) in units of the primary radius.
OTA_PADS = ((0.8921, 0.0, 0.065), (-0.4615, 0.7555, 0.065), (-0.4564, -0.7606, 0.065))
#: WFPC2 internal (repeater) obscuration: (secondary radius, spider width, rotation deg).
#: PC: wfpc2pc1.pup (rotated -45 deg to the OTA); WF3: wfpc2wf3.pup (135 deg). WF2 and WF4
#: are assumed rotated by 45 and 225 deg (the four cameras are 90 deg apart in the pyramid);
#: the small decentre of the internal obscuration given by TinyTim is neglected.
CAMERA_OBSCURATION: dict[str, tuple[float, float, float]] = {
    "PC1": (0.410, 0.058, -45.0),
    "WF2": (0.434, 0.050, 45.0),
    "WF3": (0.434, 0.050, 135.0),
    "WF4": (0.434, 0.050, 225.0),
}

#: Zernike coefficients at the chip centre, rms waves at 547 nm, in TinyTim's numbering
#: (4 focus, 5/6 x/y astigmatism, 7/8 x/y coma, 9/10 x/y clover, 11 spherical, 22 5th-order
#: spherical). PC: wfpc2pc.tab; WF: wfpc2wf?.tab via the chip-centre values in the headers of
#: shared/data/tinytim/tinytim75_wfpc2_G5V_psfs.fits (Z4-Z6) and wfpc2wf3.tab (Z11).
CENTRE_ZERNIKES: dict[str, dict[int, float]] = {
    "PC1": {5: 0.0367, 6: 0.0105, 9: 0.0113, 10: 0.0044, 11: -0.0241, 22: 0.0062},
    "WF2": {4: -0.075, 5: 0.0199, 6: 0.0101, 7: 0.0038, 8: -0.0086, 11: -0.0484},
    "WF3": {4: -0.117, 5: 0.023, 6: 0.0206, 11: -0.0484},
    "WF4": {4: -0.0878, 5: 0.0297, 6: 0.0346, 11: -0.0484},
}
#: Field dependence of Z4..Z8 (focus, x/y coma, x/y astigmatism) at chip pixel positions,
#: rms waves at 547 nm: {chip: [(x, y, Z4, Z7, Z8, Z5, Z6), ...]}. Headers of the TinyTim 7.5
#: PSF file in shared/data/tinytim (FOCn, XCOn, YCOn, XASn, YASn). Used only by the optional
#: field-varying PSF.
FIELD_ZERNIKES: dict[str, tuple[tuple[float, ...], ...]] = {
    "PC1": ((100, 100, 0.0285, -0.0059, 0.0144, 0.032, 0.0045),
            (700, 100, 0.0265, 0.0222, -0.0013, 0.0523, 0.0082),
            (400, 400, 0.0, 0.0, 0.0, 0.0367, 0.0105),
            (100, 700, 0.0233, -0.0134, 0.0052, 0.0575, 0.0011),
            (700, 700, -0.0185, 0.0049, -0.0174, 0.0344, 0.0067)),
    "WF2": ((100, 100, -0.0568, 0.0446, -0.0219, 0.0756, -0.0017),
            (700, 100, -0.086, 0.0121, -0.0982, -0.0359, 0.0171),
            (400, 400, -0.075, 0.0038, -0.0086, 0.0199, 0.0101),
            (100, 700, -0.0749, 0.0282, 0.0665, -0.0452, 0.0205),
            (700, 700, -0.0576, -0.0265, -0.0398, 0.0871, 0.0271)),
    "WF3": ((100, 100, -0.1114, 0.0121, -0.0252, -0.0224, 0.0161),
            (700, 100, -0.1137, -0.0384, -0.0166, 0.0804, 0.0289),
            (400, 400, -0.117, 0.0, 0.0, 0.023, 0.0206),
            (100, 700, -0.1313, 0.075, -0.0156, 0.0589, 0.0136),
            (700, 700, -0.1271, 0.0196, 0.0201, -0.0307, 0.0509)),
    "WF4": ((100, 100, -0.0784, -0.0153, -0.0125, 0.072, 0.0339),
            (700, 100, -0.0895, -0.0008, 0.0584, -0.0225, 0.015),
            (400, 400, -0.0878, 0.0, 0.0, 0.0297, 0.0346),
            (100, 700, -0.0874, -0.0012, -0.0664, -0.0195, 0.0093),
            (700, 700, -0.1043, 0.0409, -0.0006, 0.0654, 0.0319)),
}
#: TinyTim Zernike number -> Noll index used by poppy (TinyTim's x-astig is Noll 6, its
#: y-astig Noll 5, x-coma Noll 8, y-coma Noll 7, x-clover Noll 10, y-clover Noll 9).
TINYTIM_TO_NOLL: dict[int, int] = {4: 4, 5: 6, 6: 5, 7: 8, 8: 7, 9: 10, 10: 9, 11: 11, 22: 22}
#: Wavelength at which Zernike coefficients are given (m).
ZERNIKE_WAVELENGTH_M = 547e-9

#: Secondary-mirror despace to focus: 1 micron of SM despace = 6.8 nm rms of Z4 = 0.0125 waves
#: rms at 547 nm. Derivation (shared/wfpc2-facts.md): longitudinal focus shift = (m^2 + 1) x
#: despace with SM magnification m ~ 10.4, i.e. ~109 um per um; defocus P-V = dz / (8 N^2)
#: at N = f/24 gives 23.7 nm; Z4 rms = P-V / (2 sqrt 3) = 6.8 nm. Lallo et al. 2005
#: (ISR TEL 2005-03) for the breathing and secular focus history.
DESPACE_TO_Z4_WAVES = 0.0125

#: Filter bandpasses: (pivot wavelength nm, FWHM nm) from the WFPC2 Instrument Handbook
#: (F555W 543.9/122.8, F814W 800.1/153.9); the simulator samples each band with a few
#: wavelengths weighted by a flat-topped throughput times a G5V (5700 K) photon spectrum.
FILTERS: dict[str, tuple[float, float]] = {"F555W": (543.9, 122.8), "F814W": (800.1, 153.9)}
#: Vega zero points, magnitude of a star giving 1 e-/s (gain-independent): the WFPC2 DN/s
#: zero points for ATODGAIN 7 (Dolphin 2000, PASP 112, 1397: F555W 22.55, F814W 21.64) plus
#: 2.5 log10(7). Magnitudes in starcenter are these instrumental-calibrated V / I magnitudes.
ZERO_POINT_E: dict[str, float] = {"F555W": 22.55 + 2.113, "F814W": 21.64 + 2.113}

#: Data-quality bit flags of calibrated WFPC2 data (c1f/c1m files), WFPC2 Data Handbook
#: Table 3.3. The exposures cube stores these bits in its ``dq`` variable.
DQ_FLAGS: dict[str, int] = {
    "reed_solomon": 1,
    "calibration_defect": 2,
    "permanent_defect": 4,
    "ad_saturation": 8,
    "missing_data": 16,
    "bad_pixel": 32,
    "bleeding": 64,  # starcenter's own bit: charge bled from a saturated neighbour
    "cosmic_ray": 128,  # starcenter's own bit in simulations (real c1f: 128 = overlap)
}
#: The bits whose pixel value is not sky + stars: the classical fit ignores such pixels and a
#: raster holding one gets no network centre. Not "calibration_defect" (2: the vignetted chip
#: edges of real c1f files, 10-13 % of the pixels, values usable) nor bits >= 256 of real files.
DQ_BAD: int = sum(v for k, v in DQ_FLAGS.items() if k != "calibration_defect")


def is_bad(dq):
    """Where data-quality bits ``dq`` (array or scalar) hold a DQ_BAD bit: a boolean array."""
    return (np.asarray(dq).astype(np.int64) & DQ_BAD) > 0
