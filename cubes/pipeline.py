"""The pipeline's stages in order, as one readable list (the demo and the CLI use it).

sources (simulate, ingest) -> exposures -> detections -> transforms -> catalog -> rasters ->
model (train, predict: centers/NAME) -> evaluation.
"""

from __future__ import annotations

from starcenter.cubes import schema
from starcenter.cubes.stages.catalog import build_catalog
from starcenter.cubes.params import RasterParams
from starcenter.cubes.stages.rasters import make_rasters
from starcenter.cubes.params import TransformParams
from starcenter.cubes.stages.transforms import compute_transforms


def run_catalog(store, reference: int = 0, raster_size: int = 6, progress: bool = True,
                transform_params: TransformParams | None = None,
                raster_params: RasterParams | None = None):
    """``starcenter catalog``: transforms -> average catalog + truth -> rasters."""
    tp = transform_params or TransformParams(reference=reference)
    rp = raster_params or RasterParams(size=raster_size)
    compute_transforms(store, tp, progress)
    build_catalog(store, tp, progress)
    return make_rasters(store, rp, progress)


STAGES = (schema.EXPOSURES, schema.DETECTIONS, schema.TRANSFORMS, schema.CATALOG, schema.RASTERS)
