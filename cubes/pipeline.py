"""The pipeline: its stages in data-flow order, in one place, and the driver that runs them.

sources (simulate, ingest) -> exposures -> psf -> detections -> transforms -> catalog ->
selection + rasters -> model (train, predict: centers/NAME) -> phase (self-calibration) ->
refine (second iteration) -> evaluation (reads only).

:func:`run` runs a stretch of :data:`STAGES` on a store under the store's lock and in the cluster
asked for; every stage skips the chunks it finished before (resume) and says what to run first
when an input is missing. The command line, the demo, notebooks and benchmarks all call it::

    from starcenter.cubes import pipeline
    pipeline.run("set.zarr", start="simulate", until="rasters",
                 params={"simulate": {"config": make_config("demo")}})
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from starcenter.cubes import driver, schema
from starcenter.cubes import store as st
from starcenter.cubes.cluster import ClusterOptions, cluster
from starcenter.cubes.errors import BadArgumentError

S = schema


@dataclass(frozen=True)
class Stage:
    """One stage: its name (the command's), the groups it reads and writes, and its function
    as 'module:function' (imported when run, so this table imports no stage)."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    function: str
    summary: str

    def load(self):
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage("simulate", (), (S.EXPOSURES, S.PSF, S.TRUTH), "starcenter.cubes.sim.simulate:simulate",
          "a simulated dithered data set with exact truth (source)"),
    Stage("ingest", (), (S.EXPOSURES,), "starcenter.cubes.archive.ingest:ingest",
          "calibrated WFPC2 files (source)"),
    Stage("psf", (S.EXPOSURES,), (S.PSF, S.PSF_FIT), "starcenter.cubes.stages.psf:ensure_psf",
          "the PSF epoch fitted per exposure and chip, or the empirical or catalog ePSF"),
    Stage("detect", (S.EXPOSURES,), (S.DETECTIONS,), "starcenter.cubes.stages.detections:detect",
          "peaks and ePSF fits: the classical centres"),
    Stage("transforms", (S.DETECTIONS,), (S.TRANSFORMS,),
          "starcenter.cubes.stages.transforms:compute_transforms",
          "cubic exposure -> reference transformations and their standard errors"),
    Stage("catalog", (S.DETECTIONS, S.TRANSFORMS), (S.CATALOG,),
          "starcenter.cubes.stages.catalog:build_catalog",
          "the sigma-clipped average catalog and its projection into every exposure (truth)"),
    Stage("rasters", (S.CATALOG, S.TRANSFORMS, S.DETECTIONS, S.EXPOSURES), (S.RASTERS,),
          "starcenter.cubes.stages.rasters:make_rasters",
          "the selection step, then 6x6 rasters normalized to sum 1 with their targets"),
    Stage("train", (S.RASTERS,), (), "starcenter.model.train:train", "a VGG6 network (model file)"),
    Stage("predict", (S.RASTERS,), (S.CENTERS,), "starcenter.model.predict:predict",
          "a network's centres of every raster"),
    Stage("phase", (S.RASTERS, S.CENTERS), (S.CENTERS,), "starcenter.cubes.stages.phase:self_calibrate",
          "a method's centres self-calibrated for pixel-phase bias (uniform fractional pixels)"),
    Stage("refine", (S.CATALOG, S.RASTERS, S.CENTERS), (S.CATALOG, S.RASTERS),
          "starcenter.cubes.stages.refine:refine_catalog",
          "the catalog and raster targets rebuilt from a method's centres (second iteration)"),
)
NAMES = tuple(s.name for s in STAGES)
SOURCES = ("simulate", "ingest")


def stage(name: str) -> Stage:
    if name not in NAMES:
        raise BadArgumentError(f"unknown stage {name!r}; the stages are {', '.join(NAMES)}")
    return STAGES[NAMES.index(name)]


def run(store, start: str = "detect", until: str = "rasters", params: dict | None = None,
        cluster_options: ClusterOptions | None = None, progress: bool = True) -> dict:
    """Run the stages from ``start`` to ``until`` (inclusive, in :data:`STAGES` order) on ``store``.

    Every input group is checked before anything happens (a missing one is one StoreMismatchError
    naming the command to run first, with nothing written); then the store's lock is taken (a
    second writer is refused) and the cluster started. A source stage runs only as ``start``.

    Parameters
    ----------
    store : str or path
        The store (a local path or an fsspec URL).
    start, until : str
        Stage names, e.g. ``"simulate"``, ``"detect"``, ``"rasters"``.
    params : dict, optional
        ``{stage name: keyword arguments of its function}``, e.g.
        ``{"detect": {"params": DetectParams("catalog")}}``; the psf stage follows detect's.
    cluster_options : ClusterOptions, optional
        Where the dask work runs; None uses the active scheduler or client.
    progress : bool
        Progress lines (a bar on a terminal).

    Returns
    -------
    dict
        ``{stage name: what its function returned}``.
    """
    first, last = NAMES.index(stage(start).name), NAMES.index(stage(until).name)
    if last < first:
        raise BadArgumentError(f"stage {until!r} comes before {start!r}")
    chain = [s for s in STAGES[first:last + 1] if s.name == start or s.name not in SOURCES]
    params = _psf_from_detect(dict(params or {}), [s.name for s in chain])
    made: set[str] = set()
    for s in chain:  # before the lock and the cluster: a missing input is one line, no side effect
        driver.require(store, *[g for g in s.reads if g not in made and g != S.CENTERS])
        check = getattr(s.load(), "preflight", None)
        if check is not None and not (set(s.reads) - {S.CENTERS}) & made:
            check(store, **params.get(s.name, {}))
        made |= set(s.writes)
    out = {}
    with st.locked(store, f"{start}..{until}" if len(chain) > 1 else start), cluster(cluster_options):
        for s in chain:
            out[s.name] = _call(s, store, params.get(s.name, {}), progress)
    return out


def run_stage(stage_name: str, store, /, cluster_options: ClusterOptions | None = None,
              progress: bool = True, **kwargs):
    """Run one stage, as :func:`run` with ``start == until``.

    Parameters
    ----------
    stage_name : str
        One of :data:`NAMES`.
    store : str or path
        The store.
    cluster_options : ClusterOptions, optional
        Where the dask work runs (None: the active scheduler or client).
    progress : bool
        Progress lines.
    **kwargs
        The stage function's keyword arguments.

    Returns
    -------
    object
        What the stage's function returned.
    """
    return run(store, stage_name, stage_name, {stage_name: kwargs}, cluster_options, progress)[stage_name]


def _psf_from_detect(params: dict, chain: list[str]) -> dict:
    """The psf stage builds the ePSF that detect's parameters ask for (and rebuilds it once,
    for detect's ``rebuild_psf``), unless given its own parameters."""
    det = dict(params.get("detect", {}))
    if "psf" in chain and "psf" not in params and "params" in det:
        params["psf"] = {"kind": det["params"].psf, "rebuild": det.pop("rebuild_psf", False)}
        params["detect"] = det
    return params


def _call(s: Stage, store, kwargs: dict, progress: bool):
    fn = s.load()
    if "progress" in inspect.signature(fn).parameters:
        kwargs = {"progress": progress, **kwargs}
    return fn(store, **kwargs)


def run_catalog(store, reference: int = 0, raster_size: int = 6, progress: bool = True,
                transform_params=None, raster_params=None, cluster_options=None):
    """``starcenter catalog``: transforms -> average catalog + truth -> rasters (the rasters
    group is returned)."""
    from starcenter.cubes.params import RasterParams, TransformParams

    tp = transform_params or TransformParams(reference=reference)
    rp = raster_params or RasterParams(size=raster_size)
    out = run(store, "transforms", "rasters", {"transforms": {"params": tp}, "catalog": {"params": tp},
                                                "rasters": {"params": rp}}, cluster_options, progress)
    return out["rasters"]
