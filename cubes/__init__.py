"""starcenter.cubes: the store, its schema and the stages that fill it.

``schema`` (the whole store API: one spec per group), ``params`` (the stages' parameter
classes), ``store`` (open, stamp, write, lock), ``driver`` (the one stage shape), ``cluster``
(where dask work runs), ``pipeline`` (the stages in order and :func:`pipeline.run`),
``lookup`` (the shared readers: the ePSF of an exposure, its detections), ``constants``
(WFPC2 numbers with sources), ``errors``; and four wings: ``sim`` (the simulator), ``archive``
(WFPC2 files), ``classical`` (kernels on arrays) and ``stages``.
"""

from starcenter.cubes.classical.epsf import EffectivePSF
from starcenter.cubes.errors import (
    BadArgumentError,
    BadInputError,
    StarcenterError,
    StoreMismatchError,
)

__all__ = ["EffectivePSF", "StarcenterError", "BadArgumentError", "BadInputError",
           "StoreMismatchError"]
