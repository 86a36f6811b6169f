"""starcenter.model: centring networks and their training and prediction.

Modules: ``architectures`` (VGG6 V1/V2 of the paper's Table 1, a registry for more),
``bridge`` (the tf.data bridge streaming a rasters cube into Keras), ``train`` (recipes,
atomic per-epoch checkpoints, metadata) and ``predict`` (centres for every raster of a store).
Nothing here is imported by the earlier stages.
"""

import os
import sys


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines hidden (oneDNN notices, CUDA probing on a
    machine without a GPU): TensorFlow 2.21 writes them to the process's stderr before any log
    level applies, so stderr is pointed at /dev/null around the import and the device probe.
    ``starcenter --verbose`` (STARCENTER_VERBOSE=1) shows them. Errors still raise."""
    if "tensorflow" in sys.modules or os.environ.get("STARCENTER_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO/WARNING lines (tf.data notices)
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
