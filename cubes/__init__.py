"""starcenter.cubes: data sources (simulator, ingest) and the Zarr cubes every stage shares.

Modules: ``constants`` (WFPC2 numbers with sources), ``schema`` (the store's public layout),
``epsf`` (the shared EffectivePSF), ``optics`` (physical-optics ePSFs with poppy), ``field``
(star field, chip layout, dithers), ``detector`` (detector effects), ``simulate`` (writes a
simulated data set), ``store`` (store helpers), ``errors``.
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
