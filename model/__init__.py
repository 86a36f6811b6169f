"""starcenter.model: centring networks and their training and prediction.

Modules: ``architectures`` (VGG6 V1/V2 of the paper's Table 1, a registry for more),
``bridge`` (the tf.data bridge streaming a rasters cube into Keras), ``train`` (recipes,
atomic per-epoch checkpoints, metadata) and ``predict`` (centres for every raster of a store).
Nothing here is imported by the earlier stages.
"""
