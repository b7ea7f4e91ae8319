"""Generating weights.

* :mod:`~weightspace.generate.hypernet`: a graph hypernetwork (GHN-2 style)
  that predicts all parameters of an architecture from its parameter graph,
  including architectures it never saw in training; trained and compared
  with other inits by :mod:`~weightspace.generate.hypernet_train`.
* :mod:`~weightspace.generate.checkpoint_flow`: a G.pt-style conditional
  generator (flow matching over the parameter vector of one architecture,
  conditioned on a target metric) trained on a zoo, with a novelty report
  for every sample set (:mod:`~weightspace.generate.checkpoint_novelty`).
* :mod:`~weightspace.generate.inr_init`: meta-learned (Reptile)
  initialisations for SIREN INRs.
"""

from weightspace.generate._common import ArchSpec, RefArch, TaskData, as_arch, fit_steps, load_task
from weightspace.generate._common import deprecated_names as _deprecated_names
from weightspace.generate.inr_init import SignalSet, fit_curve, load_signals, reptile
from weightspace.generate.checkpoint_flow import (
    CheckpointFlow,
    CheckpointSet,
    MixedArchitecturesError,
    collect_checkpoints,
    generate_checkpoints,
    permutation_bank,
    train_checkpoint_flow,
)
from weightspace.generate.checkpoint_novelty import NoveltyReport, aligned_distance, novelty_report
from weightspace.generate.hypernet import GraphHyperNetwork
from weightspace.generate.hypernet_train import HypernetHistory, compare_inits, default_archs, train_hypernet

__all__ = [
    "ArchSpec",
    "RefArch",
    "CheckpointFlow",
    "CheckpointSet",
    "MixedArchitecturesError",
    "NoveltyReport",
    "SignalSet",
    "aligned_distance",
    "collect_checkpoints",
    "fit_curve",
    "generate_checkpoints",
    "load_signals",
    "novelty_report",
    "permutation_bank",
    "reptile",
    "train_checkpoint_flow",
    "GraphHyperNetwork",
    "HypernetHistory",
    "TaskData",
    "as_arch",
    "compare_inits",
    "default_archs",
    "fit_steps",
    "load_task",
    "train_hypernet",
]


# ``generate`` (a function named like this package) is now generate_checkpoints
__getattr__ = _deprecated_names(__name__, {"generate": "weightspace.generate.generate_checkpoints"})
