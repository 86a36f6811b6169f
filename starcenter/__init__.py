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

import os as _os

__version__ = "0.1.0"

# In a source checkout the design card's folders (cubes/, model/, evaluation/) sit beside this
# package: let them resolve as starcenter.cubes etc. from this same checkout, so a copy of the tree
# (a benchmark's `git archive`, a worktree) runs its own code even where another checkout is
# installed in editable mode. An installed wheel has them inside the package and skips this.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "cubes", "schema.py")) and _root not in __path__:
    __path__.append(_root)
