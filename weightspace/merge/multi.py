"""Merging more than two models: align every model to a reference, or
MergeMany (Git Re-Basin, Alg. 3): align each model in turn to the average of
the others until no permutation changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from weightspace.merge._common import MergeError, check_state_dicts, resolve_spec
from weightspace.merge.average import average
from weightspace.merge.matching import weight_matching
from weightspace.symmetry.permutation import Permutation, apply_permutation, identity_permutation
from weightspace.symmetry.spec import PermutationSpec

__all__ = ["MultiMergeResult", "align_to_reference", "merge_many"]

Matcher = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], Permutation]


@dataclass
class MultiMergeResult:
    """``N`` models in one neuron basis and their average.

    Attributes:
        state_dict: weighted average of ``aligned``.
        aligned: per model, its state_dict permuted into the common basis.
        perms: per model, the permutation applied (identity for a reference).
        rounds: MergeMany rounds run (0 for :func:`align_to_reference`).
        converged: the last round changed no permutation.
    """

    state_dict: dict[str, torch.Tensor]
    aligned: list[dict[str, torch.Tensor]]
    perms: list[Permutation]
    rounds: int = 0
    converged: bool = True
    info: dict = field(default_factory=dict)


def align_to_reference(
    sds: Sequence[Mapping[str, torch.Tensor]],
    spec: PermutationSpec | str,
    *,
    reference: int = 0,
    weights: Sequence[float] | None = None,
    matcher: Matcher | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> MultiMergeResult:
    """Permute every model into model ``reference``'s basis, then average.

    Args:
        sds: ``N`` state_dicts of one architecture.
        spec: its spec (or registered name).
        reference: index of the reference model.
        weights: averaging weights (default uniform).
        matcher: ``(sd_ref, sd_i) -> perm of sd_i``; default weight matching
            with ``seed``.
    """
    spec = resolve_spec(spec)
    check_state_dicts(sds, spec, names, min_models=1)
    if not 0 <= reference < len(sds):
        raise MergeError(f"reference {reference} out of range for {len(sds)} models")
    matcher = matcher or (lambda a, b: weight_matching(a, b, spec, seed=seed, validate=False).perm)
    perms, aligned = [], []
    for i, sd in enumerate(sds):
        p = identity_permutation(spec) if i == reference else matcher(sds[reference], sd)
        perms.append(p)
        aligned.append(apply_permutation(sd, spec, p))
    return MultiMergeResult(average(aligned, weights, names=names), aligned, perms)


def merge_many(
    sds: Sequence[Mapping[str, torch.Tensor]],
    spec: PermutationSpec | str,
    *,
    weights: Sequence[float] | None = None,
    max_rounds: int = 20,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> MultiMergeResult:
    """MergeMany: each model in turn (random order from ``seed``) is weight-
    matched to the average of all the others, until a round changes nothing.

    Args:
        sds: ``N >= 2`` state_dicts of one architecture.
        spec: its spec (or registered name).
        weights: averaging weights of the final merge (default uniform).
        max_rounds: rounds at most.
    """
    spec = resolve_spec(spec)
    check_state_dicts(sds, spec, names, min_models=2)
    n = len(sds)
    rng = np.random.default_rng(seed)
    perms = [identity_permutation(spec) for _ in range(n)]
    aligned = [dict(sd) for sd in sds]
    rounds, converged = 0, False
    for r in range(max_rounds):
        rounds += 1
        changed = False
        for i in rng.permutation(n):
            others = average([aligned[j] for j in range(n) if j != i])
            res = weight_matching(others, sds[i], spec, seed=seed + r, init=perms[i], validate=False)
            if any(not torch.equal(res.perm[k], perms[i][k]) for k in perms[i]):
                changed = True
                perms[i] = res.perm
                aligned[i] = apply_permutation(sds[i], spec, res.perm)
        if not changed:
            converged = True
            break
    return MultiMergeResult(average(aligned, weights, names=names), aligned, perms, rounds, converged)
