"""The refine stage (``starcenter catalog --from-centers NAME``): the average catalog rebuilt
from a centring method's centres, the paper's second iteration. It comes after ``predict``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.classical.stats import clipped_mean, weighted_clipped_mean
from starcenter.cubes.classical.transforms import project_catalog, tie_to_reference
from starcenter.cubes.params import TransformParams


@driver.holds_lock("catalog --from-centers")
def refine_catalog(store, name: str, progress: bool = True, min_count: int = 3):
    """The refine stage (``starcenter catalog --from-centers NAME``): the paper's second iteration.

    The average catalog rebuilt from the centres in ``centers/NAME`` (e.g. a network's) instead of
    the classical ones. Per chip, every exposure's centres are tied to the reference exposure's by
    a cubic transformation (iterative 3-sigma culling), averaged per star with the same clipping,
    and projected back into every exposure (:func:`project_catalog`). The catalog's mean, rms,
    count and truth are replaced for the stars that have such centres (the raster stars) and the
    rasters' target becomes the new truth minus the corner. A later plain ``starcenter catalog``
    restores the classical catalog and rasters. With the catalog's ``--weights inverse-variance``
    and centres that carry sigma (a network trained with ``--uncertainty``), the ties and the
    means are weighted by 1 / sigma^2 (recorded as the catalog's ``centers_weights``).

    Parameters
    ----------
    store : str or path
        A store with catalog, rasters and ``centers/NAME``.
    name : str
        The centring method.
    progress : bool
        One line with the number of stars refined.
    min_count : int
        Fewest clipped measures for a star to be refined.

    Returns
    -------
    xarray.Dataset
        The refined catalog group.
    """
    import xarray as xr

    path = st.store_path(store)
    group = schema.centers_group(name)
    driver.require(path, schema.CATALOG, schema.RASTERS)
    driver.require(path, group, hint=f"run `starcenter predict --name {name}` first")
    ref = schema.read_params(st.open_group(path, schema.TRANSFORMS), TransformParams).reference
    cat = st.open_group(path, schema.CATALOG)
    ras = st.open_group(path, schema.RASTERS)
    params = schema.read_params(st.open_group(path, schema.TRANSFORMS), TransformParams)
    cen = st.open_group(path, group)
    weighted = params.weights == "inverse-variance" and "sigma" in cen and bool(np.isfinite(cen["sigma"].values).any())
    mean, rms, count, truth, n_refined = _refined(cat, ras, cen, ref, min_count, weighted)
    st.add_variables(path, schema.CATALOG, xr.Dataset(
        {"mean": (cat["mean"].dims, mean, cat["mean"].attrs),
         "rms": (cat["rms"].dims, rms, cat["rms"].attrs),
         "count": (cat["count"].dims, count.astype(np.int32), cat["count"].attrs),
         "truth": (cat["truth"].dims, truth, cat["truth"].attrs)}))
    # same chunks as the rasters stage wrote (schema: many exposures of one chip per chunk)
    target = da.from_array(np.where(ras["mask"].values[..., None], truth - ras["corner"].values, np.nan),
                           chunks=ras["target"].data.chunks)
    st.add_variables(path, schema.RASTERS, xr.Dataset(
        {"target": (ras["target"].dims, target, {**ras["target"].attrs,
                                                 "description": f"catalog truth (from centers/{name}) - corner"})},
        coords={schema.CHIP: ras[schema.CHIP].values}))
    st.set_attr(path, schema.CATALOG, centers_source=name, centers_weights="inverse-variance" if weighted else "none")
    # a plain `starcenter catalog` afterwards sees the rasters as stale and rebuilds them
    st.set_attr(path, schema.RASTERS, catalog_source=ras.attrs.get("catalog_source", "")
                + f" refined from centers/{name}")
    if progress:
        print(f"catalog refined from centers/{name}: {n_refined} stars", flush=True)
    return st.open_group(path, schema.CATALOG)


def _refined(cat, ras, cen, ref: int, min_count: int, weighted: bool = False):
    """The catalog's mean, rms, count and truth with the raster stars' values rebuilt from the
    centres ``cen`` (tied to the reference exposure, clipped, projected back), and their number;
    ``weighted``: the ties and the clipped means weighted by the centres' 1 / sigma^2."""
    mean, rms = cat["mean"].values.copy(), cat["rms"].values.copy()
    count, truth = cat["count"].values.copy(), cat["truth"].values.copy()
    mask = ras["mask"].values
    n_refined = 0
    for c in range(ras.sizes[schema.CHIP]):
        xy = np.where(mask[:, c, :, None], cen["xy"].isel({schema.CHIP: c}).values, np.nan)
        if weighted:
            sig = np.where(mask[:, c, :, None], cen["sigma"].isel({schema.CHIP: c}).values, np.nan)
            m, r, n = weighted_clipped_mean(tie_to_reference(xy, ref, sigma=sig), sig)
        else:
            m, r, n = clipped_mean(tie_to_reference(xy, ref))
        n = n.min(axis=-1)
        good = n >= min_count
        mean[c, good], rms[c, good], count[c, good] = m[good], r[good], n[good]
        usable = np.any(np.all(np.isfinite(xy), axis=-1), axis=1)
        t, _ = project_catalog(m, r, xy, good, usable)
        rows = np.any(np.isfinite(t[..., 0]), axis=1)
        truth[rows, c] = np.where(good[None, :, None], t[rows], truth[rows, c])
        n_refined += int(good.sum())
    return mean, rms, count, truth, n_refined
