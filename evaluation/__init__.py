"""starcenter.evaluation: figures, metrics and the demo.

``plots`` draws figures that only read a store; ``demo`` runs the demo on the embedded
default (simulated) data set. Metrics, the Cramér–Rao bound and the report come with the
evaluation issue (#7).
"""
