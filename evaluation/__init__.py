"""starcenter.evaluation: what a store's centres are worth; it only reads.

``metrics`` (robust sigma, errors against truth, standard error of the transformations against
offset phase, per-star rms, the stars each method is scored on), ``cramer_rao`` (the bound),
``truth`` and ``summary`` (truth-based tables), ``plots`` (figures) and ``report`` (assembles
metrics.json, report.md and the figures). The demo that runs the stages is
:mod:`starcenter.demo`.
"""
