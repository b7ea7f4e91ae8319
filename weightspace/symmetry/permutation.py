"""Random, apply, invert and compose permutations of a spec, and the
canonical (energy-sorted) permutation used by
:func:`weightspace.symmetry.canonicalize`.

A permutation is ``{group name: LongTensor[size]}`` (gather convention
``new[i] = old[perm[i]]``); neuron groups act before head groups. All
functions are pure: they return new tensors and never modify their inputs.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from weightspace.errors import SpecError
from weightspace.symmetry.spec import AxisRef, PermutationSpec

Permutation = dict[str, torch.Tensor]


def identity_permutation(spec: PermutationSpec) -> Permutation:
    """The identity: ``arange(size)`` for every group."""
    return {g.name: torch.arange(g.size) for g in spec.groups}


def random_permutation(
    spec: PermutationSpec, seed: int | None = None, *, generator: torch.Generator | None = None
) -> Permutation:
    """A uniformly random permutation of every group.

    Args:
        seed: integer seed (ignored when ``generator`` is given). One of the
            two is required: randomness is always explicit.
    """
    if generator is None:
        if seed is None:
            raise ValueError("random_permutation needs a seed or a torch.Generator")
        generator = torch.Generator().manual_seed(int(seed))
    return {g.name: torch.randperm(g.size, generator=generator) for g in spec.groups}


def validate_permutation(spec: PermutationSpec, perm: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`SpecError` unless ``perm`` has a valid permutation for
    every group of ``spec`` (missing groups are an error; use
    :func:`identity_permutation` to start from)."""
    unknown = [k for k in perm if k not in spec._by_name]
    if unknown:
        raise SpecError(f"permutation has unknown group(s) {unknown}; the spec has {spec.names}")
    for g in spec.groups:
        if g.name not in perm:
            raise SpecError(f"permutation is missing group {g.name!r}")
        p = torch.as_tensor(perm[g.name])
        if p.shape != (g.size,):
            raise SpecError(f"group {g.name!r}: expected shape ({g.size},), got {tuple(p.shape)}")
        if p.dtype.is_floating_point or not torch.equal(torch.sort(p).values, torch.arange(g.size)):
            raise SpecError(f"group {g.name!r}: not a permutation of 0..{g.size - 1}")


def block_index_maps(spec: PermutationSpec, perm: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per block, the gather index of its neurons under ``perm``.

    Returns:
        list over ``spec.blocks`` of LongTensor ``[block size]`` with
        ``new neuron c = old neuron maps[b][c]``.
    """
    validate_permutation(spec, perm)
    return [m[0] for m in block_index_maps_batched(spec, {k: torch.as_tensor(v)[None] for k, v in perm.items()})]


def block_index_maps_batched(spec: PermutationSpec, perm: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """:func:`block_index_maps` for ``N`` networks at once: ``perm`` values
    are LongTensor ``[N, size]`` (not validated); returns ``[N, block size]``
    per block."""
    n = next(iter(perm.values())).shape[0] if perm else 1
    maps = [torch.arange(b.size).expand(n, b.size) for b in spec.blocks]
    for kind in ("neuron", "head"):
        for g in spec.groups:
            if g.kind != kind:
                continue
            p = torch.as_tensor(perm[g.name]).long()
            for b, s in g.targets:
                span = g.size * g.unit
                seg = maps[b][:, s : s + span].reshape(n, g.size, g.unit)
                seg = seg.gather(1, p[:, :, None].expand(n, g.size, g.unit)).reshape(n, span)
                maps[b] = torch.cat([maps[b][:, :s], seg, maps[b][:, s + span :]], dim=1)
    return maps


def axis_index(ref: AxisRef, length: int, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gather index of one tensor axis under per-block neuron maps.

    Args:
        ref: how the axis maps onto block neurons (``spec.param_axes[name][k]``).
        length: the axis' length (``tensor.shape[ref.axis]``).
        maps: per block, LongTensor ``[block size]`` from :func:`block_index_maps`.

    Returns:
        LongTensor ``[length]``: ``t.index_select(ref.axis, index)`` is the
        axis permuted; positions outside ``ref.segments`` stay in place.
    """
    return axis_index_batched(ref, length, [m[None] for m in maps])[0]


def axis_index_batched(ref: AxisRef, length: int, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`axis_index` for ``N`` networks: ``maps`` are ``[N, block
    size]``; returns LongTensor ``[N, length]``."""
    n = maps[0].shape[0] if len(maps) else 1
    idx = torch.arange(length).repeat(n, 1)
    for b, bs, k, astart in ref.segments:
        src = maps[b][:, bs : bs + k] - bs
        pos = (astart + src[:, :, None] * ref.rep + torch.arange(ref.rep)).reshape(n, -1)
        idx[:, astart : astart + k * ref.rep] = pos
    return idx


def _permute_axes(
    tensors: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    permute_axis: Callable[[torch.Tensor, AxisRef], torch.Tensor],
    lead: int,
) -> dict[str, torch.Tensor]:
    """Apply ``permute_axis(t, ref)`` along every neuron axis of every tensor
    (``lead`` leading network axes before the spec's shape); tensors without
    neuron axes are copied."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        refs = spec.param_axes.get(name)
        if not refs:
            out[name] = t.clone()
            continue
        if tuple(t.shape[lead:]) != tuple(spec.param_shapes[name]):
            raise SpecError(
                f"tensor {name!r} has shape {tuple(t.shape[lead:])}, the spec expects {spec.param_shapes[name]}"
            )
        for ref in refs:
            t = permute_axis(t, ref)
        out[name] = t
    return out


def apply_block_maps_batched(
    tensors: Mapping[str, torch.Tensor], spec: PermutationSpec, maps: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """:func:`apply_block_maps` for ``N`` networks: every tensor has a
    leading network axis, ``maps`` are ``[N, block size]``."""

    def gather(t: torch.Tensor, ref: AxisRef) -> torch.Tensor:
        ax = ref.axis + 1
        idx = axis_index_batched(ref, t.shape[ax], maps)
        shape = [t.shape[0]] + [1] * (t.dim() - 1)
        shape[ax] = t.shape[ax]
        return t.gather(ax, idx.view(shape).expand(t.shape))

    return _permute_axes(tensors, spec, gather, lead=1)


_axis_index = axis_index  # the former private name


def apply_block_maps(
    state_dict: Mapping[str, torch.Tensor], spec: PermutationSpec, maps: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Permute every tensor of ``state_dict`` by per-block gather indices."""
    return _permute_axes(
        state_dict, spec, lambda t, ref: t.index_select(ref.axis, axis_index(ref, t.shape[ref.axis], maps)), lead=0
    )


def apply_permutation(
    state_dict: Mapping[str, torch.Tensor], spec: PermutationSpec, perm: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A new state_dict with every neuron axis permuted by ``perm``.

    The network computes the same function (see ``tests/symmetry``).
    """
    return apply_block_maps(state_dict, spec, block_index_maps(spec, perm))


def _invert_maps(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.argsort(m) for m in maps]


def permutation_from_block_maps(spec: PermutationSpec, maps: list[torch.Tensor]) -> Permutation:
    """Decompose per-block gather indices into group permutations (inverse of
    :func:`block_index_maps` for maps generated by the spec's groups)."""
    perm: Permutation = {}
    for g in spec.head_groups:
        b, s = g.targets[0]
        starts = maps[b][s : s + g.size * g.unit : g.unit]
        perm[g.name] = torch.div(starts - s, g.unit, rounding_mode="floor")
    head_perm = {**{g.name: torch.arange(g.size) for g in spec.neuron_groups}, **perm}
    head_maps = block_index_maps(spec, head_perm)
    inv_head = _invert_maps(head_maps)
    neuron_maps = [m[ih] for m, ih in zip(maps, inv_head)]
    for g in spec.neuron_groups:
        b, s = g.targets[0]
        perm[g.name] = neuron_maps[b][s : s + g.size] - s
    return {g.name: perm[g.name] for g in spec.groups}


def invert_permutation(spec: PermutationSpec, perm: Mapping[str, torch.Tensor]) -> Permutation:
    """``inv`` such that applying ``perm`` then ``inv`` is the identity."""
    return permutation_from_block_maps(spec, _invert_maps(block_index_maps(spec, perm)))


def compose_permutations(
    spec: PermutationSpec, first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]
) -> Permutation:
    """``r`` with ``apply(sd, r) == apply(apply(sd, first), second)``."""
    m1, m2 = block_index_maps(spec, first), block_index_maps(spec, second)
    return permutation_from_block_maps(spec, [a[b] for a, b in zip(m1, m2)])


def neuron_energy(state_dict: Mapping[str, torch.Tensor], spec: PermutationSpec) -> list[torch.Tensor]:
    """Per block neuron, the summed squared weight of every tensor slice that
    belongs to it (float64, ``[block size]`` per block). Invariant to the
    permutation of all other neurons; used as the canonical sort key."""
    return [e[0] for e in neuron_energy_batched({k: v[None] for k, v in state_dict.items()}, spec)]


def neuron_energy_batched(tensors: Mapping[str, torch.Tensor], spec: PermutationSpec) -> list[torch.Tensor]:
    """:func:`neuron_energy` for ``N`` networks (leading network axis):
    ``[N, block size]`` per block."""
    n = next(iter(tensors.values())).shape[0]
    energy = [torch.zeros(n, b.size, dtype=torch.float64) for b in spec.blocks]
    for name, refs in spec.param_axes.items():
        t = tensors[name].detach().to(torch.float64).pow(2)
        for ref in refs:
            dims = [d for d in range(1, t.dim()) if d != ref.axis + 1]
            e = t.sum(dim=dims) if dims else t
            for b, bs, k, astart in ref.segments:
                energy[b][:, bs : bs + k] += e[:, astart : astart + k * ref.rep].reshape(n, k, ref.rep).sum(2)
    return energy


def canonical_permutation(state_dict: Mapping[str, torch.Tensor], spec: PermutationSpec) -> Permutation:
    """The permutation that sorts every group's units by decreasing energy
    (:func:`neuron_energy`); heads by their total energy (stable: ties keep
    their order)."""
    perm = canonical_permutation_batched({k: v[None] for k, v in state_dict.items()}, spec)
    return {k: v[0] for k, v in perm.items()}


def canonical_permutation_batched(tensors: Mapping[str, torch.Tensor], spec: PermutationSpec) -> Permutation:
    """:func:`canonical_permutation` for ``N`` networks (leading network
    axis): ``{group: LongTensor [N, size]}``."""
    energy = neuron_energy_batched(tensors, spec)
    n = energy[0].shape[0] if energy else 1
    perm: Permutation = {}
    for g in spec.groups:
        score = torch.zeros(n, g.size, dtype=torch.float64)
        for b, s in g.targets:
            score += energy[b][:, s : s + g.size * g.unit].reshape(n, g.size, g.unit).sum(2)
        perm[g.name] = torch.argsort(-score, dim=1, stable=True)
    return perm
