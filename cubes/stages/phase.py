"""The phase stage (``starcenter phase STORE --from NAME``): a method's centres self-calibrated
for pixel-phase bias (:mod:`starcenter.cubes.classical.phase`: the fractional pixels of unbiased
centres are uniform), per exposure (or over the store), chip and axis, the correction's
uncertainty added to sigma in quadrature.

It corrects the bias of centres at a given phase averaged over the stars used, as a polynomial of
order ``order`` in the chip position; a bias that changes with magnitude, or in x with the y phase,
stays. Measured (SIMULATION, WF3 -12 um, library ePSF, bright stars, after a cubic per exposure;
benchmarks/bench_phase.py): 83 / 70 mpix -> 35 / 26 (order 1, per exposure) and 32 / 23 (pooled
over the store); the fitted ePSF and the generalist on the same set: unchanged (no harmonic
significant).
"""

from __future__ import annotations

import json

import numpy as np

from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.phase import (HARMONICS, ORDER, P_VALUE, POOLS, apply, coefficients,
                                              normal_sums, pooled, usable)
from starcenter.cubes.errors import BadArgumentError, StoreMismatchError
from starcenter.cubes.schema import EXPOSURE_BLOCK

#: The centres it reads when no centers group is named: the preliminary ePSF fit of the rasters.
CLASSICAL = "classical"
_COEF = ("phase_cos", "phase_sin", "phase_p", "phase_n")


def _source(root, source: str, e0: int, e1: int, c: int) -> dict:
    """The source centres of exposures e0:e1 of chip c: xy (px), sigma, flags, flux, flux_err."""
    ras = root[schema.RASTERS]
    mask = np.asarray(ras["mask"][e0:e1, c])
    if source == CLASSICAL:
        n = mask.shape
        xy = np.where(mask[..., None], np.asarray(ras["prelim"][e0:e1, c]), np.nan)
        return {"xy": xy, "sigma": np.where(mask[..., None], np.asarray(ras["prelim_err"][e0:e1, c]), np.nan),
                "flags": np.zeros(n, np.uint8), "flux": np.full(n, np.nan), "flux_err": np.full(n, np.nan)}
    g = root[schema.centers_group(source)]
    out = {v: np.asarray(g[v][e0:e1, c]) for v in ("xy", "sigma", "flags", "flux", "flux_err") if v in g}
    out["xy"] = np.where(mask[..., None], out["xy"], np.nan)
    return out


def _block_sums(path: str, source: str, c: int, e0: int, e1: int, harmonics: int, order: int):
    """The least-squares sums (classical.phase.normal_sums) of a block's usable centres."""
    import zarr

    src = _source(zarr.open_group(path, mode="r"), source, e0, e1, c)
    return normal_sums(src["xy"], usable(src["xy"], src.get("sigma"), src.get("flags")), harmonics, order)


def _write_block(path: str, source: str, name: str, c: int, e0: int, e1: int, coef: dict, order: int):
    """Correct the block's centres with their coefficients and write them, the done marker last."""
    import zarr

    root = zarr.open_group(path, mode="r+")
    src = _source(root, source, e0, e1, c)
    xy, sig = apply(src["xy"], coef["phase_cos"][e0:e1], coef["phase_sin"][e0:e1], coef["g"][e0:e1], order)
    sigma = np.hypot(src.get("sigma", np.full(xy.shape, np.nan)).astype(float), sig)
    grp = root[schema.centers_group(name)]
    grp["xy"][e0:e1, c], grp["sigma"][e0:e1, c] = xy, sigma
    for var in ("flags", "flux", "flux_err"):
        if var in src:
            grp[var][e0:e1, c] = src[var]
    for var in _COEF:
        grp[var][e0:e1, c] = coef[var][e0:e1]
    grp["done"][e0 // EXPOSURE_BLOCK, c] = 1


def _coefficients(path: str, source: str, c: int, ne: int, opts: dict) -> dict:
    """Per exposure of chip c: the kept coefficients (exposure, axis, field term, harmonic), their
    p (exposure, axis, harmonic), the centres used and the sums G; pooled over the store when asked."""
    import dask

    blocks = [(e0, min(ne, e0 + EXPOSURE_BLOCK)) for e0 in range(0, ne, EXPOSURE_BLOCK)]
    parts = st.run_tasks([dask.delayed(_block_sums)(path, source, c, e0, e1, opts["harmonics"], opts["order"])
                          for e0, e1 in blocks], "", False)
    g, r = pooled(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), opts["pool"])
    a, b, p = coefficients(g, r, opts["p_value"])
    n = np.rint(g[:, 0, 0]).astype(np.int32)  # the constant monomial: the count
    return {"phase_cos": a, "phase_sin": b, "phase_p": p, "phase_n": n, "g": g}


def _identity(path: str, source: str) -> str:
    """What the source centres are: the rasters they belong to and, for a centers group, the model
    that wrote each chip (a rerun after either changed redoes the correction)."""
    ras = st.open_group(path, schema.RASTERS)
    ident = {"source": source, "rasters": ras.attrs.get("catalog_source", "") + ras.attrs.get("params", "")}
    if source != CLASSICAL:
        attrs = st.open_group(path, schema.centers_group(source)).attrs
        ident.update({k: v for k, v in attrs.items() if k.startswith("model_")})
    return json.dumps(ident, sort_keys=True)


def _check(path: str, source: str, name: str, harmonics: int, p_value: float, pool: str, order: int):
    driver.require(path, schema.RASTERS)
    if source != CLASSICAL:
        driver.require(path, schema.centers_group(source),
                       hint=f"run `starcenter predict --name {source}` first")
    if name in (source, CLASSICAL):
        raise BadArgumentError(f"the corrected centres need a name of their own, not {name!r}")
    target = schema.centers_group(name)
    if st.has_group(path, target) and "phase_source" not in st.open_group(path, target).attrs:
        raise StoreMismatchError(path, f"{target} holds another method's centres (not written by "
                                       "`starcenter phase`): choose another --name")
    if pool not in POOLS:
        raise BadArgumentError(f"--pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if not (1 <= harmonics <= 20 and 0 <= order <= 3 and 0 < p_value <= 1):
        raise BadArgumentError(f"harmonics {harmonics} (1-20), order {order} (0-3) and p-value "
                               f"{p_value} (0 < p <= 1) are out of range")


def _args(store, source=CLASSICAL, name=None, harmonics=HARMONICS, p_value=P_VALUE, pool="exposure",
          order=ORDER, **_):
    return (st.store_path(store), source, name or f"{source}-phase", harmonics, p_value, pool, order)


@driver.preflight(lambda store, **kw: _check(*_args(store, **kw)))
@driver.holds_lock("phase")
def self_calibrate(store, source: str = CLASSICAL, name: str | None = None, harmonics: int = HARMONICS,
                   p_value: float = P_VALUE, pool: str = "exposure", order: int = ORDER,
                   progress: bool = True):
    """The phase stage: a method's centres corrected for pixel-phase bias -> ``centers/NAME``.

    Parameters
    ----------
    store : str or path
        A store with rasters (and ``centers/SOURCE``).
    source : str
        The centres to correct: a centers group's name, or ``"classical"`` (the rasters'
        preliminary ePSF fit).
    name : str, optional
        The corrected centres' group name; default ``SOURCE-phase``.
    harmonics : int
        Fourier harmonics of the phase density fitted (each kept only where significant).
    p_value : float
        A harmonic is kept where its chi-square p under a uniform density is below this.
    pool : {"exposure", "store"}
        One correction per exposure (its own stars), or one per chip for the whole store (every
        exposure at the same PSF epoch: N times the stars, sqrt(N) less noise).
    order : int
        Polynomial order in the chip position of the coefficients (0: one correction for the chip;
        1: linear, for a bias that changes across the chip; every order costs significance).
    progress : bool
        Progress lines.

    Returns
    -------
    xarray.Dataset
        ``centers/NAME``: xy corrected (px), sigma with the correction's uncertainty in quadrature,
        the source's flags and flux, the coefficients ``phase_cos``, ``phase_sin`` (0 where not
        kept; exposure, chip, axis, field_term, harmonic), ``phase_p`` (exposure, chip, axis,
        harmonic) and the centres used ``phase_n`` (exposure, chip).
    """
    import dask

    path, source, name, harmonics, p_value, pool, order = _args(store, source, name, harmonics, p_value,
                                                                pool, order)
    _check(path, source, name, harmonics, p_value, pool, order)
    ras = st.open_group(path, schema.RASTERS)
    ne, nc, ns = ras.sizes[schema.EXPOSURE], ras.sizes[schema.CHIP], ras.sizes[schema.STAR]
    group = schema.centers_group(name)
    opts = {"harmonics": harmonics, "p_value": p_value, "pool": pool, "order": order}
    sizes = {schema.EXPOSURE: ne, schema.CHIP: nc, schema.STAR: ns, schema.AXIS: 2,
             schema.HARMONIC: harmonics, schema.FIELD_TERM: (order + 1) * (order + 2) // 2,
             schema.BLOCK: -(-ne // EXPOSURE_BLOCK)}
    coords = {schema.EXPOSURE: ras[schema.EXPOSURE].values, schema.CHIP: ras[schema.CHIP].values,
              schema.AXIS: np.array(["x", "y"], dtype=object)}
    attrs = {"method": name, "pixel_convention": schema.PIXEL_CONVENTION, "phase_source": source}
    done = driver.prepare(path, group, lambda: schema.template(
        group, ("xy", "sigma", "flags", "flux", "flux_err", *_COEF, "done"), sizes, coords, attrs),
        {"phase_params": json.dumps(opts, sort_keys=True), "phase_of": _identity(path, source)})
    if source != CLASSICAL:  # evaluation scores the corrected centres on the source's stars
        src_attrs = st.open_group(path, schema.centers_group(source)).attrs
        st.set_attr(path, group, **{k: v for k, v in src_attrs.items() if k.startswith(("split_", "model_"))})
    chips = [str(v) for v in ras[schema.CHIP].values]
    for c in range(nc):
        if done[:, c].all():
            continue
        coef = _coefficients(path, source, c, ne, opts)
        ready = np.zeros(done.shape, bool)
        ready[:, c] = True
        driver.run_chunks(path, group, done, lambda blk, k: dask.delayed(_write_block)(
            path, source, name, k, blk * EXPOSURE_BLOCK, min(ne, (blk + 1) * EXPOSURE_BLOCK), coef, order),
            f"phase {source} -> {name} {chips[c]} {path}", progress, ready)
    driver.finish(path, group)
    return st.open_group(path, group)
