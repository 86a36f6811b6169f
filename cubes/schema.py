"""The store schema: group names, dimensions, dtypes, chunking, units and the pixel convention.

This module is the public contract between the pipeline stages. Every stage reads and writes a
store only through the names defined here, and every group opens with plain
``xarray.open_zarr(store, group=NAME)``.

Pixel convention
----------------
Positions are **0-based pixel coordinates with pixel centres at integers**: the pixel at
array index ``image[..., j, i]`` covers ``x in [i - 0.5, i + 0.5)`` and
``y in [j - 0.5, j + 0.5)``. ``x`` runs along columns (FITS NAXIS1), ``y`` along rows (NAXIS2,
the WFPC2 readout direction). This is numpy's and photutils' convention; a FITS/IRAF
(1-based) position is ``x_fits = x + 1``. The *fractional pixel* (pixel phase) of a position is
``x - round(x)`` in ``[-0.5, 0.5)``. Raster targets (later issues) use the same convention
relative to the raster's bottom-left pixel centre.

Groups (one Zarr group per pipeline product)
--------------------------------------------
``exposures``  image(exposure, chip, y, x) float32 DN, calibrated; dq(exposure, chip, y, x)
               uint16 data-quality bits (constants.DQ_FLAGS); per-exposure coordinates.
               Chunks: one (exposure, chip) image per chunk, 800 x 800 float32 = 2.4 MiB:
               the unit every later stage (detection, rasters) reads, and the unit of resume.
``psf``        the true and library ePSFs per chip on a 4x supersampled grid (small, one chunk);
               ``empirical`` and ``catalog`` (the Anderson & King ePSF learnt at the average
               catalog's positions, cubes.detections.build_catalog_psfs) once built.
``truth``      simulations only: star ids, magnitudes, fluxes per (chip, star) and the true
               positions x, y(exposure, chip, star) in each exposure's chip pixels. Chunks: one
               (exposure, chip) per chunk so they are written with their image.
``detections`` x, y, flux, sky, q, mag, saturated, flags (exposure, chip, det), padded with NaN
               beyond ``count(exposure, chip)``; one (exposure, chip) per chunk (cubes.detections).
``transforms`` per (exposure, chip): cubic coefficients target -> reference and back (term), the
               offset at the chip centre, standard errors, star counts, a status code (small,
               one chunk; cubes.transforms).
``catalog``    measures(exposure, chip, star, axis) in the reference system (one (exposure, chip)
               per chunk, rechunked by star for the clipped mean), mean/rms/count(chip, star, axis)
               and truth(exposure, chip, star, axis) projected back with the catalog -> exposure
               cubics proj_x/proj_y(exposure, chip, term) (cubes.catalog).
``rasters``    raster(exposure, chip, star, ry, rx) float32 normalized to sum 1, target, prelim,
               corner (exposure, chip, star, axis), mag, mask, offset_phase, selected and
               stack_residual (chip, star); chunks of 64 exposures
               of one chip with every star, the unit the tf.data bridge streams (cubes.rasters).
``centers/NAME`` xy(exposure, chip, star, axis): centres of method NAME in chip pixels, aligned
               with the rasters' stars (model.predict). Attributes ``model_<chip>`` (the model
               file and its hash) and ``split_<chip>`` (whether the model trained on this
               store's data, its split seed and fractions: evaluation scores such a network on
               its test stars only).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Version of this schema, written into every store's root attributes.
SCHEMA_VERSION = "1"

# Group names: the public schema.
EXPOSURES = "exposures"
PSF = "psf"
TRUTH = "truth"
DETECTIONS = "detections"
TRANSFORMS = "transforms"
CATALOG = "catalog"
RASTERS = "rasters"
CENTERS = "centers"  # centers/NAME, one subgroup per centring method

GROUPS = (EXPOSURES, PSF, TRUTH, DETECTIONS, TRANSFORMS, CATALOG, RASTERS, CENTERS)


def centers_group(name: str) -> str:
    """Group path of the centres written by centring method ``name``."""
    return f"{CENTERS}/{name}"


# Dimension names.
EXPOSURE, CHIP, STAR, Y, X = "exposure", "chip", "star", "y", "x"
#: ePSF grid dimensions (supersampled), the focus-node dimension and the field-node dims.
EY, EX, FOCUS, FIELD_Y, FIELD_X = "ey", "ex", "focus", "field_y", "field_x"

#: ePSF supersampling factor (Anderson & King 2000 use 4x).
OVERSAMPLING = 4
#: ePSF extent in detector pixels (odd): 25 px is 1.1" on the PC and 2.5" on the WF chips.
EPSF_SIZE_PX = 25
#: Number of ePSF grid samples per side: centre sample at index EPSF_SIZE_PX*OVERSAMPLING//2.
EPSF_SAMPLES = EPSF_SIZE_PX * OVERSAMPLING + 1


@dataclass(frozen=True)
class Var:
    """One variable of the schema: dims, dtype, units and meaning."""

    dims: tuple[str, ...]
    dtype: str
    units: str
    description: str


EXPOSURE_VARS: dict[str, Var] = {
    "image": Var((EXPOSURE, CHIP, Y, X), "float32", "DN",
                 "calibrated exposure (bias, dark and flat corrected) in data numbers"),
    "dq": Var((EXPOSURE, CHIP, Y, X), "uint16", "",
              "data-quality bit flags, see attribute flag_masks / flag_meanings"),
    "done": Var((EXPOSURE, CHIP), "uint8", "",
                "1 once the (exposure, chip) chunk of every variable is written (resume marker)"),
}

#: Chunk shape of every exposures variable, per dimension.
EXPOSURE_CHUNKS = {EXPOSURE: 1, CHIP: 1, Y: 800, X: 800}

TRUTH_VARS: dict[str, Var] = {
    "star_id": Var((CHIP, STAR), "int64", "", "global star id, -1 for padding"),
    "mag": Var((CHIP, STAR), "float64", "mag", "Vega magnitude in the data set's filter"),
    "flux": Var((CHIP, STAR), "float64", "e-", "total flux per exposure within the ePSF box"),
    "x": Var((EXPOSURE, CHIP, STAR), "float64", "px",
             "true x in the exposure's chip pixels (schema pixel convention)"),
    "y": Var((EXPOSURE, CHIP, STAR), "float64", "px", "true y in the exposure's chip pixels"),
}
TRUTH_CHUNKS = {EXPOSURE: 1, CHIP: 1}

PIXEL_CONVENTION = ("0-based, pixel centres at integer coordinates; x along columns (NAXIS1), "
                    "y along rows (NAXIS2)")
