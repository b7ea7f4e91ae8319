"""Helpers shared by :mod:`weightspace.nn`, :mod:`weightspace.predict` and
the ``zoo`` package, one layer above ``trace`` / ``graph`` / ``symmetry`` /
``core`` and below every consumer (they import nothing above ``core``):

* :mod:`~weightspace.common.splits`: the one train / val / test group split.
* :mod:`~weightspace.common.metrics`: regression and ranking metrics, with
  bootstrap confidence intervals.
* :mod:`~weightspace.common.tensor_stats`: per-tensor weight statistics.
* :mod:`~weightspace.common.zoo_samples`: the one loop from a zoo-like
  object to its checkpoints' parameter graphs and metrics.

(Not ``weightspace.data``: that name is taken by the dataset registry.)
"""
