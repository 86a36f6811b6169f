"""Parameters of the stages, validated on construction and stored as JSON on their group.

:func:`starcenter.cubes.schema.read_params` reads a group's ``params`` attribute back as its typed class.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from starcenter.cubes.errors import BadArgumentError

PSF_KINDS = ("library", "true", "empirical", "catalog", "fitted")
#: What the psf stage fits to each exposure's stars.
PSF_FITS = ("focus", "focus+diffusion")
#: How the transformations and the catalog weight each star.
WEIGHTS = ("none", "inverse-variance")


class _Stored:
    """A parameters dataclass stored on its group as sorted JSON (schema.read_params reads it)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class DetectParams:
    psf: str = "library"
    threshold: float = 5.0
    min_separation: float = 2.0
    #: passes of neighbour subtraction (0: none, the hst1pass situation): each star refitted on
    #: the image minus the ePSF models of all other fitted stars
    neighbour_passes: int = 0
    #: an Anderson STDPSF WFPC2 file for the ``library`` ePSF ("" : the physical model's)
    library: str = ""

    def __post_init__(self):
        if self.library and self.psf != "library":
            raise BadArgumentError(f"--library gives the library ePSF; it does not go with --psf {self.psf}")
        if self.psf not in PSF_KINDS:
            raise BadArgumentError(f"unknown --psf {self.psf!r}; expected one of {PSF_KINDS}")
        if self.threshold <= 0 or self.min_separation < 0:
            raise BadArgumentError("threshold must be > 0 and min_separation >= 0")
        if not 0 <= self.neighbour_passes <= 5:
            raise BadArgumentError(f"neighbour passes must be 0..5, got {self.neighbour_passes}")

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("neighbour_passes", "library"):  # stores made before these options stay compatible
            if not d[k]:
                del d[k]
        return json.dumps(d, sort_keys=True)


@dataclass(frozen=True)
class PSFFitParams(_Stored):
    """The psf stage's fit of each (exposure, chip)'s PSF epoch (:mod:`cubes.classical.focus`).

    fit: what is fitted ("focus": the secondary-mirror despace, one Z4 offset per chip;
    "focus+diffusion": and then the charge-diffusion strength at that focus, classical.focus.diffuse).
    min_stars: fewest usable stars for a fit; fewer flags the exposure (library ePSF used).
    min_snr: a star's peak S/N at least this; isolation_px: no other detection this close (px);
    max_stars: the brightest kept. grid_min, grid_max, grid_step: the coarse focus nodes (um)
    searched; fine_step: the lattice (um) the minimum is refined on and the ePSFs are stored at.
    field: "on": the model's field-dependent aberrations (3x3 field nodes per focus node) in the
    refinement and in ``detect --psf fitted`` (real WFPC2 chips); "off": one chip-centre ePSF
    per chip (9x fewer physical-optics ePSFs); "auto" (default): a simulation's own setting
    (its --field-varying), "on" for archive data.
    """

    fit: str = "focus"
    min_stars: int = 30
    min_snr: float = 30.0
    isolation_px: float = 5.0
    max_stars: int = 300
    grid_min: float = -15.0
    grid_max: float = 20.0
    grid_step: float = 2.5
    fine_step: float = 1.0
    field: str = "auto"

    def __post_init__(self):
        if self.field not in ("auto", "on", "off"):
            raise BadArgumentError(f"field must be auto, on or off, got {self.field!r}")
        if self.fit not in PSF_FITS:
            raise BadArgumentError(f"unknown --fit {self.fit!r}; expected one of {PSF_FITS}")
        if not 3 <= self.min_stars <= self.max_stars:
            raise BadArgumentError(f"need 3 <= min_stars <= max_stars, got {self.min_stars}, {self.max_stars}")
        if self.min_snr <= 0 or self.isolation_px < 0:
            raise BadArgumentError("min_snr must be > 0 and isolation_px >= 0")
        if not (self.grid_step > 0 and self.fine_step > 0 and self.grid_max - self.grid_min >= 4 * self.grid_step):
            raise BadArgumentError("the focus grid needs steps > 0 and at least 5 nodes")

    def grid(self):
        """The coarse focus nodes (um)."""
        import numpy as np

        n = int(round((self.grid_max - self.grid_min) / self.grid_step)) + 1
        return np.round(self.grid_min + self.grid_step * np.arange(n), 6)


@dataclass(frozen=True)
class TransformParams(_Stored):
    """reference: reference exposure index. central: fraction of the chip kept (1/3).
    q_min, q_max: quality-of-fit window. max_offset: px searched for the offset; match_radius:
    px for nearest neighbours after the offset; min_stars: fewest stars for a cubic fit.
    min_flux: faintest fitted flux (DN) used; the standard error is an rms over stars, and the
    crowd of faint detections (S/N ~ 5-20) would otherwise dominate it. weights: "none" (the
    paper's unweighted fits) or "inverse-variance": the cubic transformations and the catalog's
    clipped means weight every star by 1 / sigma_eff^2, sigma_eff from the detections' Fisher
    uncertainties through an error model fitted to each exposure's residuals
    (classical.stats.error_model); the 3-sigma clipping is kept. catalog_min_flux: faintest
    fitted flux (DN) of the average catalog's stars (and so of the rasters); 0: min_flux. Fainter
    catalog stars than the transformations use widen the flux range the networks and their
    uncertainties are trained and judged on, without letting faint stars dominate the fits."""

    reference: int = 0
    central: float = 1 / 3
    q_min: float = 1e-4
    q_max: float = 1.0
    max_offset: float = 10.0
    match_radius: float = 0.75
    clip_sigma: float = 3.0
    min_stars: int = 20
    min_flux: float = 500.0
    weights: str = "none"
    catalog_min_flux: float = 0.0

    @property
    def catalog_flux(self) -> float:
        """The faintest fitted flux (DN) of the catalog's stars."""
        return self.catalog_min_flux or self.min_flux

    def __post_init__(self):
        if self.catalog_min_flux < 0:
            raise BadArgumentError(f"catalog_min_flux must be >= 0, got {self.catalog_min_flux}")
        if self.weights not in WEIGHTS:
            raise BadArgumentError(f"unknown weights {self.weights!r}; expected one of {WEIGHTS}")
        if not 0 < self.central <= 1:
            raise BadArgumentError(f"central fraction must be in (0, 1], got {self.central}")
        if self.max_offset <= 0 or self.match_radius <= 0:
            raise BadArgumentError("max_offset and match_radius must be > 0")

    def to_json(self) -> str:
        d = asdict(self)
        for k, default in (("weights", "none"), ("catalog_min_flux", 0.0)):
            if d[k] == default:  # stores made before these options stay compatible
                del d[k]
        return json.dumps(d, sort_keys=True)


#: What a raster holds of its neighbours (RasterParams.neighbours).
NEIGHBOURS = ("keep", "subtract")


@dataclass(frozen=True)
class RasterParams(_Stored):
    """size: raster side (px). isolation: no other reference detection within this (px).
    min_fraction: measured in at least this fraction of the usable exposures. q_rel_max: a
    star's median q over exposures at most this multiple of the chip's median, or of the median
    of its stars of the same magnitude where that is higher (faint stars' q is higher; undetected
    neighbours raise q; on the demo simulation the stars above 1.5x median q carry 60-75% of
    the catalog's > 50 mpix crowding errors). max_stack_residual: largest departure (fraction of
    the star's flux per pixel) of a star's stacked residual from the chip's common residual
    pattern (:func:`stacked_residual`), or for faint stars up to STACK_NOISE_REL x their own
    single-exposure pixel noise (:func:`stack_allowance`); 0 turns the cut off. An undetected
    neighbour within 2 px shows in the stack of hundreds of exposures although each single fit
    hides it; measured on a 160-exposure simulation with the catalog ePSF, the stars above 0.002
    carry the catalog truth's crowding tail (truth - exact rms 9-13 mpix -> 1.9-2.9 mpix for the
    45 % kept)."""

    size: int = 6
    isolation: float = 5.0
    min_fraction: float = 0.5
    q_rel_max: float = 1.5
    max_stack_residual: float = 0.002
    #: "keep": the paper's cutouts of the image; "subtract": of the image less the ePSF models of
    #: every other detected star (the detections' fits, with their ePSF)
    neighbours: str = "keep"

    def __post_init__(self):
        if not 3 <= self.size <= 21:
            raise BadArgumentError(f"raster size must be 3..21 px, got {self.size}")
        if self.neighbours not in NEIGHBOURS:
            raise BadArgumentError(f"unknown neighbours {self.neighbours!r}; expected one of {NEIGHBOURS}")
        if not 0 < self.min_fraction <= 1:
            raise BadArgumentError("min_fraction must be in (0, 1]")
        if self.max_stack_residual < 0:
            raise BadArgumentError("max_stack_residual must be >= 0 (0: no cut)")

    def to_json(self) -> str:
        d = asdict(self)
        if d["neighbours"] == "keep":  # rasters made before this option stay compatible
            del d["neighbours"]
        return json.dumps(d, sort_keys=True)
