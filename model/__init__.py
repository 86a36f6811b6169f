"""starcenter.model: centring networks and their training and prediction.

Modules: ``architectures`` (VGG6 V1/V2 of the paper's Table 1, a registry for more),
``bridge`` (the tf.data bridge streaming a rasters cube into Keras), ``train`` (recipes,
atomic per-epoch checkpoints, metadata) and ``predict`` (centres for every raster of a store).
Nothing here is imported by the earlier stages.
"""

import logging
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
    logging.getLogger("tensorflow").addFilter(_NotRetracing())


class _NotRetracing(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function forward.<locals>.<lambda>>
    triggered tf.function retracing": it counts the traces of every model's forward function
    together (one tf.function per model, keyed by the lambda's code), so a worker that centres
    with six models warns though each model traced once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def set_tensorflow_threads(threads: int | None = None) -> None:
    """TensorFlow's intra- and inter-op thread pools: ``threads`` each (default
    $STARCENTER_TF_THREADS; unset: TensorFlow's own, one per core). Must run before TensorFlow's
    first op in the process (a later call changes nothing and says so).

    Measured on the 2-core machine (benchmarks/bench_train_cores.py): one training gains little
    from a second thread at the demo's batch of 64, while two trainings of one thread each run
    side by side at nearly twice the samples/s; so the demo trains its networks two at a time,
    one thread each (starcenter.model.parallel)."""
    n = threads or int(os.environ.get("STARCENTER_TF_THREADS", "0") or 0)
    if n <= 0:
        return
    quiet_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as err:  # TensorFlow already running in this process
        print(f"starcenter: TensorFlow threads left as they are ({err})", file=sys.stderr)
