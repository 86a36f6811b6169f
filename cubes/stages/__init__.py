"""The pipeline stages: each reads earlier groups of a store and writes its own, chunk by chunk,
resumable. In data-flow order (``starcenter.cubes.pipeline.STAGES``): ``psf``, ``detections``,
``transforms``, ``catalog``, ``selection``, ``rasters``; ``phase`` (a method's centres
self-calibrated for pixel-phase bias) and ``refine`` (the catalog rebuilt from a network's
centres) come after the model's ``predict``."""
