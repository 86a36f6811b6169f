"""starcenter: star-image centring on undersampled detectors (HST/WFPC2).

One import namespace over the design card's folders (``pyproject.toml`` maps them):

- ``starcenter.cubes`` (folder ``cubes/``): the store's schema and helpers, and four wings:
  ``sim`` (the simulator), ``archive`` (WFPC2 files in and out), ``classical`` (centring
  algorithms on arrays: peaks, ePSF fitting, transformations; they never open a store) and
  ``stages`` (the pipeline stages that read and write a store); ``pipeline`` runs them in order.
- ``starcenter.model`` (``model/``): VGG6 networks, the tf.data bridge, training, prediction.
- ``starcenter.evaluation`` (``evaluation/``): metrics, figures and reports; it only reads.
- ``starcenter.cli``, ``starcenter.demo``, ``starcenter.sweep``: the command line and the two
  orchestrations that run stages end to end.
"""

__version__ = "0.1.0"
