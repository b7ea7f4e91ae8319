"""Model merging and fusion for any traced architecture.

Alignment (:mod:`~weightspace.merge.matching`): weight matching, activation
matching and straight-through-estimator matching (Git Re-Basin), all driven
by the :class:`~weightspace.symmetry.PermutationSpec` derived from the trace,
so residual streams, BatchNorm, flattens, concatenations and attention heads
need no hand-written spec; their assignment solvers (LAP, attention heads)
are :mod:`~weightspace.merge.assignment`, activation statistics
:mod:`~weightspace.merge.activations`. Multi-model merging
(:mod:`~weightspace.merge.multi`), optimal-transport fusion with
heterogeneous widths (:mod:`~weightspace.merge.ot_fusion`), the averaging
family (:mod:`~weightspace.merge.average`), task-vector merges (TIES, DARE,
model breadcrumbs, SLERP: :mod:`~weightspace.merge.task_vectors`; out of
core on safetensors directories: :mod:`~weightspace.merge.stream`), REPAIR and BatchNorm reset
(:mod:`~weightspace.merge.repair`), linear-path barriers
(:mod:`~weightspace.merge.barrier`) and a YAML config runner
(:mod:`~weightspace.merge.config`).

Conventions: a permutation returned by a matcher maps model ``b`` onto model
``a`` (``apply_permutation(sd_b, spec, perm)``); functions never modify their
inputs; randomness comes from explicit seeds; progress bars are off unless
``progress=True``.
"""

from weightspace.merge._common import MergeConfigError, MergeError
from weightspace.merge.average import (
    average,
    diagonal_fisher,
    fisher_average,
    interpolate,
    task_arithmetic,
)
from weightspace.merge.barrier import PathResult, barrier, evaluate, linear_path, loss_and_accuracy
from weightspace.merge.config import MergeConfig, MergeOutcome, load_config, run_config
from weightspace.merge.matching import (
    CACHE_BYTES,
    MatchResult,
    activation_matching,
    match_objective,
    ste_matching,
    weight_matching,
)
from weightspace.merge.multi import MultiMergeResult, align_to_reference, merge_many
from weightspace.merge.ot_fusion import FusionResult, check_same_family, ot_fusion
from weightspace.merge.repair import repair, reset_bn_stats
from weightspace.merge.stream import StreamPlan, merge_directories
from weightspace.merge.task_vectors import breadcrumbs, dare, slerp, ties

__all__ = [
    "CACHE_BYTES",
    "FusionResult",
    "MatchResult",
    "MergeConfig",
    "MergeConfigError",
    "MergeError",
    "MergeOutcome",
    "MultiMergeResult",
    "PathResult",
    "StreamPlan",
    "activation_matching",
    "align_to_reference",
    "average",
    "barrier",
    "breadcrumbs",
    "check_same_family",
    "dare",
    "diagonal_fisher",
    "evaluate",
    "fisher_average",
    "interpolate",
    "linear_path",
    "load_config",
    "loss_and_accuracy",
    "match_objective",
    "merge_directories",
    "merge_many",
    "ot_fusion",
    "repair",
    "reset_bn_stats",
    "run_config",
    "slerp",
    "ste_matching",
    "task_arithmetic",
    "ties",
    "weight_matching",
]
