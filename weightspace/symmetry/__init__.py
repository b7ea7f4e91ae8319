"""Permutation symmetries derived from the trace: :class:`PermutationSpec`
and pure functions to draw, apply, invert, compose and canonicalize
permutations; :func:`split_groups` finds the neuron groups nested in
attention heads (:class:`HeadLayout`)."""

from weightspace.symmetry.heads import HeadLayout, split_groups
from weightspace.symmetry.permutation import (
    Permutation,
    apply_block_maps,
    apply_permutation,
    axis_index,
    block_index_maps,
    canonical_permutation,
    canonicalize,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    neuron_energy,
    permutation_from_block_maps,
    random_permutation,
    validate_permutation,
)
from weightspace.symmetry.spec import AxisRef, BlockInfo, PermGroup, PermutationSpec, build_spec

__all__ = [
    "AxisRef",
    "BlockInfo",
    "HeadLayout",
    "PermGroup",
    "Permutation",
    "PermutationSpec",
    "apply_block_maps",
    "apply_permutation",
    "axis_index",
    "block_index_maps",
    "build_spec",
    "canonical_permutation",
    "canonicalize",
    "compose_permutations",
    "identity_permutation",
    "invert_permutation",
    "neuron_energy",
    "permutation_from_block_maps",
    "random_permutation",
    "split_groups",
    "validate_permutation",
]
