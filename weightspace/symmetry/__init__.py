"""Symmetries derived from the trace: :class:`PermutationSpec` (free
permutation groups, and per-unit scaling/sign groups in ``spec.scalings``,
:class:`ScaleGroup`), pure functions to draw, apply, invert and compose
permutations, the full group (:class:`Symmetry`: :func:`random_symmetry`,
:func:`apply_symmetry`, :func:`canonicalize`); :func:`split_groups` finds
the neuron groups nested in attention heads (:class:`HeadLayout`)."""

from weightspace.symmetry.heads import HeadLayout, split_groups
from weightspace.symmetry.permutation import (
    Permutation,
    apply_block_maps,
    apply_permutation,
    axis_index,
    block_index_maps,
    canonical_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    neuron_energy,
    permutation_from_block_maps,
    random_permutation,
    validate_permutation,
)
from weightspace.symmetry.group import (
    Symmetry,
    apply_scaling,
    apply_symmetry,
    canonicalize,
    identity_symmetry,
    random_symmetry,
)
from weightspace.symmetry.scaling import ScaleAxis, ScaleGroup, derive_scalings
from weightspace.symmetry.spec import AxisRef, BlockInfo, PermGroup, PermutationSpec, build_spec

__all__ = [
    "AxisRef",
    "BlockInfo",
    "HeadLayout",
    "PermGroup",
    "Permutation",
    "PermutationSpec",
    "ScaleAxis",
    "ScaleGroup",
    "Symmetry",
    "apply_block_maps",
    "apply_permutation",
    "apply_scaling",
    "apply_symmetry",
    "axis_index",
    "block_index_maps",
    "build_spec",
    "canonical_permutation",
    "canonicalize",
    "compose_permutations",
    "derive_scalings",
    "identity_permutation",
    "identity_symmetry",
    "invert_permutation",
    "neuron_energy",
    "permutation_from_block_maps",
    "random_permutation",
    "random_symmetry",
    "split_groups",
    "validate_permutation",
]
