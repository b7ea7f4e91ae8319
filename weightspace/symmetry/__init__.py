"""Permutation symmetries derived from the trace: :class:`PermutationSpec`
and pure functions to draw, apply, invert, compose and canonicalize
permutations."""

from weightspace.symmetry.permutation import (
    Permutation,
    apply_block_maps,
    apply_permutation,
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
from weightspace.symmetry.spec import (
    AxisRef,
    AxisSegment,
    BlockInfo,
    GroupAxis,
    PermGroup,
    PermutationSpec,
    build_spec,
)
from weightspace.trace.structure import BlockPos

__all__ = [
    "AxisRef",
    "AxisSegment",
    "BlockInfo",
    "BlockPos",
    "GroupAxis",
    "PermGroup",
    "Permutation",
    "PermutationSpec",
    "apply_block_maps",
    "apply_permutation",
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
    "validate_permutation",
]
