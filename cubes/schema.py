"""The store schema: group names, dimensions, dtypes, chunking, units and the pixel convention.

This module is the public contract between the pipeline stages: one :class:`GroupSpec` per group
(its variables with dims, dtype, units and fill value; its chunks; its parameters class; the
command that makes it), from which every stage builds its group (:func:`template`) and reads its
parameters back (:func:`read_params`). All dimension names and chunk sizes live here. Every group
opens with plain ``xarray.open_zarr(store, group=NAME)``.

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
               catalog's positions, stages.psf.build_catalog_psfs) once built.
``psf_fit``    the PSF epoch fitted to each exposure's own stars (stages.psf_fit): focus, focus_err
               (um), n_stars, chi2_red, status(exposure, chip) in chunks of 64 exposures of one
               chip, and epsf(chip, focus_node, field_y, field_x, ey, ex), the model's ePSFs at
               the focus and field nodes the fits need.
``truth``      simulations only: star ids, magnitudes, fluxes per (chip, star) and the true
               positions x, y(exposure, chip, star) in each exposure's chip pixels. Chunks: one
               (exposure, chip) per chunk so they are written with their image.
``detections`` x, y, flux, sky, q, mag, saturated, flags and the fit's Fisher uncertainties
               x_err, y_err, flux_err (exposure, chip, det), padded with NaN beyond
               ``count(exposure, chip)``; one (exposure, chip) per chunk (stages.detections).
``transforms`` per (exposure, chip): cubic coefficients target -> reference and back (term), the
               offset at the chip centre, standard errors, star counts, a status code and, with
               inverse-variance weights, the error model error_scale, error_floor (small, one
               chunk; stages.transforms).
``catalog``    measures(exposure, chip, star, axis) in the reference system and their sigma_eff
               measure_err (one (exposure, chip) per chunk, rechunked by star for the clipped
               mean), mean/rms/count(chip, star, axis) and truth(exposure, chip, star, axis)
               projected back with the catalog -> exposure cubics proj_x/proj_y(exposure, chip,
               term) (stages.catalog).
``rasters``    raster(exposure, chip, star, ry, rx) float32 normalized to sum 1, target, prelim,
               prelim_err (its Fisher sigma), corner (exposure, chip, star, axis), mag, mask, dq
               (the OR of its pixels' bits), offset_phase, selected, stack_residual and stack_noise (chip, star); chunks of 64 exposures of
               one chip with every star, the unit the tf.data bridge streams (stages.rasters).
``centers/NAME`` xy(exposure, chip, star, axis): centres of method NAME in chip pixels, aligned
               with the rasters' stars, their calibrated sigma (px; NaN for a network without
               uncertainty outputs) and flags(exposure, chip, star) (starcenter.model.predict).
               Attributes ``model_<chip>`` (the model file and its hash) and ``split_<chip>``
               (whether the model trained on this store's data, its split seed and fractions:
               evaluation scores such a network on its test stars only). ``starcenter phase``
               writes a method's centres corrected for pixel-phase bias (stages.phase) with the
               same variables and the coefficients phase_cos, phase_sin(exposure, chip, axis,
               field_term, harmonic), phase_p(exposure, chip, axis, harmonic), phase_n(exposure,
               chip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Version of this schema, written into every store's root attributes.
SCHEMA_VERSION = "1"

# Group names.
EXPOSURES, PSF, TRUTH, DETECTIONS = "exposures", "psf", "truth", "detections"
TRANSFORMS, CATALOG, RASTERS, CENTERS = "transforms", "catalog", "rasters", "centers"
PSF_FIT = "psf_fit"
GROUPS = (EXPOSURES, PSF, PSF_FIT, TRUTH, DETECTIONS, TRANSFORMS, CATALOG, RASTERS, CENTERS)


def centers_group(name: str) -> str:
    """Group path of the centres written by centring method ``name``."""
    return f"{CENTERS}/{name}"


# Dimension names.
EXPOSURE, CHIP, STAR, Y, X = "exposure", "chip", "star", "y", "x"
#: position axis (x, y), detection slot, cubic term, raster pixel rows/columns, exposure block
AXIS, DET, TERM, RY, RX, BLOCK = "axis", "det", "term", "ry", "rx", "block"
#: ePSF grid dimensions (supersampled), the focus-node dimension and the field-node dims.
EY, EX, FOCUS, FIELD_Y, FIELD_X = "ey", "ex", "focus", "field_y", "field_x"
#: the focus nodes (um) of the fitted ePSFs (psf_fit group)
FOCUS_NODE = "focus_node"
#: a monomial of the chip position and a Fourier harmonic of the phase density (phase stage)
FIELD_TERM, HARMONIC = "field_term", "harmonic"
#: Every dimension name a group may use.
DIMS = (EXPOSURE, CHIP, STAR, Y, X, AXIS, DET, TERM, RY, RX, BLOCK, EY, EX, FOCUS, FIELD_Y, FIELD_X,
        FOCUS_NODE, FIELD_TERM, HARMONIC)

#: ePSF supersampling factor (Anderson & King 2000 use 4x).
OVERSAMPLING = 4
#: ePSF extent in detector pixels (odd): 25 px is 1.1" on the PC and 2.5" on the WF chips.
EPSF_SIZE_PX = 25
#: Number of ePSF grid samples per side: centre sample at index EPSF_SIZE_PX*OVERSAMPLING//2.
EPSF_SAMPLES = EPSF_SIZE_PX * OVERSAMPLING + 1

# Chunk sizes, chosen on purpose:
#: Exposures per chunk of rasters and centers: many exposures of one chip per chunk, the unit the
#: tf.data bridge streams and predict centres (64 x ~400 stars x 36 px x 4 B ~ 3.7 MB).
EXPOSURE_BLOCK = 64
#: Detection slots per (exposure, chip) reserved while writing; the det dimension is shrunk to the
#: largest count once every chunk is written.
DET_CAPACITY = 32768
#: Stars per chunk of the catalog's star-wise clipped mean (measures rechunked by star).
STAR_CHUNK = 512

PIXEL_CONVENTION = ("0-based, pixel centres at integer coordinates; x along columns (NAXIS1), "
                    "y along rows (NAXIS2)")


@dataclass(frozen=True)
class Var:
    """One variable of the schema: dims, dtype, units, meaning and the zarr fill value (what an
    unwritten chunk reads as; None: zarr's default, 0)."""

    dims: tuple[str, ...]
    dtype: str
    units: str
    description: str
    fill: float | int | None = None


@dataclass(frozen=True)
class GroupSpec:
    """One group: its variables, chunk size per dimension (absent: one chunk), the name of its
    parameters class in :mod:`starcenter.cubes.params` and the command that makes it."""

    name: str
    variables: dict[str, Var]
    chunks: dict[str, int] = field(default_factory=dict)
    params: str | None = None
    made_by: str = ""


def _v(dims, dtype, units, description, fill=None):
    return Var(tuple(dims), dtype, units, description, fill)


NAN = float("nan")
_EC, _ECS, _ECSA = (EXPOSURE, CHIP), (EXPOSURE, CHIP, STAR), (EXPOSURE, CHIP, STAR, AXIS)
_DONE = _v(_EC, "uint8", "", "1 once the (exposure, chip) chunk of every variable is written (resume marker)")
_BLOCK_DONE = _v((BLOCK, CHIP), "uint8", "", "1 once the chunk of EXPOSURE_BLOCK exposures of the chip is written")

SPECS: dict[str, GroupSpec] = {
    EXPOSURES: GroupSpec(EXPOSURES, {
        "image": _v((*_EC, Y, X), "float32", "DN",
                    "calibrated exposure (bias, dark and flat corrected) in data numbers"),
        "dq": _v((*_EC, Y, X), "uint16", "", "data-quality bit flags, see attribute flag_masks / flag_meanings"),
        "done": _DONE,
    }, {EXPOSURE: 1, CHIP: 1, Y: 800, X: 800}, None, "`starcenter simulate` or `starcenter ingest`"),
    PSF: GroupSpec(PSF, {
        "library": _v((CHIP, EY, EX), "float64", "flux fraction per pixel",
                      "library ePSF: nominal focus (zero despace), chip centre"),
        "true": _v((CHIP, FOCUS, FIELD_Y, FIELD_X, EY, EX), "float64", "flux fraction per pixel",
                   "true ePSF nodes of this data set; exposures interpolate linearly in focus and field"),
        "empirical": _v((CHIP, EY, EX), "float64", "flux fraction per pixel", "photutils EPSFBuilder ePSF"),
        "catalog": _v((CHIP, EY, EX), "float64", "flux fraction per pixel",
                      "Anderson & King ePSF learnt at the average catalog's positions"),
    }, {}, None, "`starcenter simulate` (or `starcenter detect --psf empirical|catalog`)"),
    PSF_FIT: GroupSpec(PSF_FIT, {
        "focus": _v(_EC, "float64", "um", "fitted secondary-mirror despace vs the library (NaN: flagged)", NAN),
        "focus_err": _v(_EC, "float64", "um", "1-sigma uncertainty of the fitted focus", NAN),
        "n_stars": _v(_EC, "int32", "", "stars used by the fit"),
        "chi2_red": _v(_EC, "float64", "", "reduced chi-square at the fitted focus", NAN),
        "status": _v(_EC, "int8", "", "0 ok; see attributes flag_values / flag_meanings"),
        "diffusion": _v(_EC, "float64", "", "charge-diffusion perturbation d (0: the model's kernel; "
                        "fit focus+diffusion, else NaN)", NAN),
        "diffusion_err": _v(_EC, "float64", "", "1-sigma uncertainty of diffusion", NAN),
        "done": _BLOCK_DONE,
        "epsf": _v((CHIP, FOCUS_NODE, FIELD_Y, FIELD_X, EY, EX), "float64", "flux fraction per pixel",
                   "physical-model ePSFs at the focus nodes the fits need and the field nodes (one, "
                   "the chip centre, without the field-dependent model); an exposure's fitted ePSF "
                   "is linear between the two focus nodes around its focus, bilinear in the field"),
    }, {EXPOSURE: EXPOSURE_BLOCK, CHIP: 1, BLOCK: 1}, "PSFFitParams", "`starcenter psf --fit focus`"),
    TRUTH: GroupSpec(TRUTH, {
        "star_id": _v((CHIP, STAR), "int64", "", "global star id, -1 for padding"),
        "mag": _v((CHIP, STAR), "float64", "mag", "Vega magnitude in the data set's filter"),
        "flux": _v((CHIP, STAR), "float64", "e-", "total flux per exposure within the ePSF box"),
        "x": _v(_ECS, "float64", "px", "true x in the exposure's chip pixels (schema pixel convention)"),
        "y": _v(_ECS, "float64", "px", "true y in the exposure's chip pixels"),
        "done": _DONE,
    }, {EXPOSURE: 1, CHIP: 1}, None, "`starcenter simulate`"),
    DETECTIONS: GroupSpec(DETECTIONS, {
        "x": _v((*_EC, DET), "float64", "px", "fitted x, chip pixels (schema convention)", NAN),
        "y": _v((*_EC, DET), "float64", "px", "fitted y, chip pixels", NAN),
        "flux": _v((*_EC, DET), "float32", "DN", "fitted flux", NAN),
        "sky": _v((*_EC, DET), "float32", "DN", "fitted sky per pixel", NAN),
        "q": _v((*_EC, DET), "float32", "",
                "quality of fit: sum |residual| / flux over 5x5 (hst1pass-like); 0 = saturated", NAN),
        "mag": _v((*_EC, DET), "float32", "mag", "instrumental magnitude -2.5 log10(flux / DN)", NAN),
        "saturated": _v((*_EC, DET), "bool", "", "saturated star (not fitted; centre = peak pixel)"),
        "flags": _v((*_EC, DET), "int32", "", "fit flag bits, see attributes flag_masks / flag_meanings"),
        "x_err": _v((*_EC, DET), "float32", "px", "1-sigma x from the fit's Fisher matrix (noise only; "
                    "inf: not fitted)", NAN),
        "y_err": _v((*_EC, DET), "float32", "px", "1-sigma y from the fit's Fisher matrix", NAN),
        "flux_err": _v((*_EC, DET), "float32", "DN", "1-sigma flux from the fit's Fisher matrix", NAN),
        "count": _v(_EC, "int32", "", "number of detections (the rest of det is padding)"),
        "done": _DONE,
    }, {EXPOSURE: 1, CHIP: 1, DET: DET_CAPACITY}, "DetectParams", "`starcenter detect`"),
    TRANSFORMS: GroupSpec(TRANSFORMS, {
        "coef_x": _v((*_EC, TERM), "float64", "px", "target -> reference x, cubic in u, v"),
        "coef_y": _v((*_EC, TERM), "float64", "px", "target -> reference y, cubic in u, v"),
        "inv_x": _v((*_EC, TERM), "float64", "px", "reference -> target x"),
        "inv_y": _v((*_EC, TERM), "float64", "px", "reference -> target y"),
        "std_err_x": _v(_EC, "float64", "px", "standard error of the transformation, x"),
        "std_err_y": _v(_EC, "float64", "px", "standard error of the transformation, y"),
        "n_stars": _v(_EC, "int32", "", "stars kept by the fit"),
        "offset_x": _v(_EC, "float64", "px", "reference - target at the chip centre, x"),
        "offset_y": _v(_EC, "float64", "px", "reference - target at the chip centre, y"),
        "status": _v(_EC, "int8", "", "status code, see attributes flag_values / flag_meanings"),
        "error_scale": _v(_EC, "float64", "", "error model scale a (weights inverse-variance; else NaN)", NAN),
        "error_floor": _v(_EC, "float64", "px", "error model floor b of a position difference "
                          "(sigma_eff^2 = a^2 sigma^2 + b^2; weights inverse-variance, else NaN)", NAN),
    }, {}, "TransformParams", "`starcenter catalog`"),
    CATALOG: GroupSpec(CATALOG, {
        "measures": _v(_ECSA, "float64", "px", "positions in the reference exposure's system", NAN),
        "native": _v(_ECSA, "float64", "px", "the same measures in each exposure's own pixels", NAN),
        "det_index": _v(_ECS, "int32", "", "index of the star's detection in the exposure, -1: none"),
        "measure_err": _v(_ECSA, "float32", "px", "sigma_eff of each measure (weights inverse-variance; "
                          "else NaN)", NAN),
        "done": _DONE,
        "mean": _v((CHIP, STAR, AXIS), "float64", "px",
                   "3-sigma-clipped mean position in the reference exposure's system"),
        "rms": _v((CHIP, STAR, AXIS), "float64", "px", "rms about the mean"),
        "count": _v((CHIP, STAR), "int32", "", "measures kept after clipping"),
        "ref_mag": _v((CHIP, STAR), "float64", "mag", "instrumental mag in the reference"),
        "truth": _v(_ECSA, "float64", "px", "catalog projected back into each exposure's pixels"),
        "proj_x": _v((*_EC, TERM), "float64", "px", "cubic catalog -> exposure x coefficients"),
        "proj_y": _v((*_EC, TERM), "float64", "px", "cubic catalog -> exposure y coefficients"),
    }, {EXPOSURE: 1, CHIP: 1}, "TransformParams", "`starcenter catalog`"),
    RASTERS: GroupSpec(RASTERS, {
        "raster": _v((*_ECS, RY, RX), "float32", "", "cutout normalized to sum 1"),
        "target": _v(_ECSA, "float64", "px", "catalog truth - corner (raster convention)", NAN),
        "prelim": _v(_ECSA, "float64", "px", "preliminary classical position (chip px)", NAN),
        "prelim_err": _v(_ECSA, "float32", "px", "its 1-sigma uncertainty (the fit's Fisher matrix)", NAN),
        "corner": _v(_ECSA, "int32", "px", "chip pixel of raster pixel (0, 0), (x, y)"),
        "mag": _v(_ECS, "float32", "mag", "instrumental magnitude of the star in the exposure", NAN),
        "mask": _v(_ECS, "bool", "", "True where the raster is valid"),
        "dq": _v(_ECS, "uint16", "", "OR of the data-quality bits of the raster's pixels "
                 "(constants.DQ_FLAGS; a DQ_BAD bit: no network centre)"),
        "selected": _v((CHIP, STAR), "bool", "", "star passes the selection (stages.selection)"),
        "stack_residual": _v((CHIP, STAR), "float64", "flux fraction per px",
                             "largest departure of the star's stacked fit residual from the chip's "
                             "common pattern within 2 px beyond its noise (NaN: not a candidate or cut off)"),
        "stack_noise": _v((CHIP, STAR), "float64", "flux fraction per px",
                          "one exposure's noise per pixel of the star (median within 2 px; the cut "
                          "allows a departure of STACK_NOISE_REL x this where above max_stack_residual)"),
        "offset_phase": _v((*_EC, AXIS), "float64", "", "fractional part of the exposure's offset from the reference"),
        "done": _BLOCK_DONE,
        "target_exact": _v(_ECSA, "float64", "px", "simulation truth - corner (simulations only)"),
        "sim_index": _v((CHIP, STAR), "int64", "", "index into truth's star dimension, -1 if unmatched"),
    }, {EXPOSURE: EXPOSURE_BLOCK, CHIP: 1, BLOCK: 1}, "RasterParams", "`starcenter catalog`"),
    CENTERS: GroupSpec(CENTERS, {
        "xy": _v(_ECSA, "float64", "px", "centre in chip pixels (schema convention)", NAN),
        "sigma": _v(_ECSA, "float32", "px", "calibrated 1-sigma uncertainty of xy (NaN: the model "
                    "predicts none; inf: no centre, see flags)", NAN),
        "flags": _v(_ECS, "uint8", "", "centring flag bits, see attributes flag_masks / flag_meanings"),
        "flux": _v(_ECS, "float32", "e-", "the network's flux (NaN: the model predicts none)", NAN),
        "flux_err": _v(_ECS, "float32", "e-", "its calibrated 1-sigma uncertainty", NAN),
        "phase_cos": _v((*_EC, AXIS, FIELD_TERM, HARMONIC), "float64", "", "kept cosine coefficient of "
                        "the fractional-pixel density, per monomial of the chip position (0: not "
                        "significant; the phase stage's centres)", NAN),
        "phase_sin": _v((*_EC, AXIS, FIELD_TERM, HARMONIC), "float64", "", "kept sine coefficient", NAN),
        "phase_p": _v((*_EC, AXIS, HARMONIC), "float64", "",
                      "chi-square p of the harmonic under a uniform density", NAN),
        "phase_n": _v(_EC, "int32", "", "centres the phase density was fitted on"),
        "done": _BLOCK_DONE,
    }, {EXPOSURE: EXPOSURE_BLOCK, CHIP: 1, BLOCK: 1}, None, "`starcenter predict`"),
}


def spec(group: str) -> GroupSpec:
    """The spec of ``group`` (``centers/NAME`` -> the centers spec)."""
    return SPECS[group.split("/", 1)[0]]


def template(group: str, names, sizes: dict, coords: dict, attrs: dict, values: dict | None = None):
    """The lazy template of some variables of a group, and its zarr encoding.

    Parameters
    ----------
    group : str
        A group name (``centers/NAME`` takes the centers spec).
    names : sequence of str
        Variables of the group's spec to lay down.
    sizes : dict
        Length of every dimension used.
    coords, attrs : dict
        The dataset's coordinates and attributes.
    values : dict, optional
        Variables given as in-memory arrays (written at once); the others are lazy zeros whose
        chunks the stage writes later.

    Returns
    -------
    (xarray.Dataset, dict)
        The template (units and descriptions from the spec, chunks from :func:`chunk_shape`) and
        the encoding with the spec's fill values.
    """
    import dask.array as da
    import xarray as xr

    sp, values = spec(group), values or {}
    data, encoding = {}, {}
    for name in names:
        v = sp.variables[name]
        shape = tuple(sizes[d] for d in v.dims)
        meta = {k: t for k, t in (("units", v.units), ("description", v.description)) if t}
        if name in values:
            data[name] = (v.dims, np.asarray(values[name]).astype(v.dtype, copy=False), meta)
        else:
            chunks = chunk_shape(group, name, sizes)
            data[name] = (v.dims, da.zeros(shape, chunks=chunks, dtype=v.dtype), meta)
        if v.fill is not None:
            encoding[name] = {"fill_value": v.fill}
    return xr.Dataset(data, coords=coords, attrs=attrs), encoding


def chunk_shape(group: str, name: str, sizes: dict) -> tuple[int, ...]:
    """The zarr chunk shape of variable ``name`` of ``group`` for dimension lengths ``sizes``:
    the spec's chunk per dimension (the whole dimension where it names none), at least 1."""
    sp = spec(group)
    return tuple(max(1, min(sp.chunks.get(d, sizes[d]), sizes[d])) for d in sp.variables[name].dims)


def variable(group: str, name: str, data, **attrs):
    """(dims, data, attrs) of one variable of ``group`` for an in-memory xarray.Dataset."""
    v = spec(group).variables[name]
    meta = {k: t for k, t in (("units", v.units), ("description", v.description)) if t}
    return (v.dims, np.asarray(data).astype(v.dtype, copy=False), {**meta, **attrs})


def read_params(ds_or_attrs, cls):
    """A group's stored ``params`` attribute (JSON) as its parameters class ``cls`` (the spec's
    ``params``, in :mod:`starcenter.cubes.params`)."""
    import json

    attrs = getattr(ds_or_attrs, "attrs", ds_or_attrs)
    return cls(**json.loads(attrs["params"]))
