"""PermutationSpec: which neurons can be permuted without changing the function.

Derived from a traced :class:`~weightspace.trace.ComputationGraph`, never
written by hand. Terminology:

block
    the neurons one op creates (output channels of a conv, the units of a
    Linear, the model's input features, ...), ``spec.blocks[b]``.
group
    a free permutation. A *neuron* group of size ``n`` permutes ``n``
    neurons at once in each of its targets ``BlockPos(block, start)``
    (several targets = neurons that must move together, e.g. both sides of
    a residual add). A *head* group permutes ``n`` units of ``unit``
    consecutive neurons (attention heads) in each target.
axes
    ``group.axes`` lists every :class:`GroupAxis` ``(param, axis, start,
    unit)`` the group acts on: positions ``start + i * unit + r``
    (``i < size``, ``r < unit``) of that tensor axis are unit ``i``. This is
    what weight matching needs to build cost matrices.

A permutation is a ``dict`` ``{group name: LongTensor[size]}`` with the
gather convention ``new[i] = old[perm[i]]``. Neuron groups act first, head
groups second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from weightspace.symmetry.scaling import ScaleGroup, derive_scalings
from weightspace.trace.structure import BlockPos, Structure, resolve
from weightspace.trace.tracer import ComputationGraph


@dataclass(frozen=True)
class BlockInfo:
    """One block of neurons: ``size`` neurons created by ``producer`` (``op``)."""

    size: int
    kind: str  # "input" | "hidden" | "output"
    producer: str
    op: str
    fixed: bool


class AxisSegment(NamedTuple):
    """Neurons ``block_start .. block_start + length`` of block ``block``,
    laid out along a tensor axis from position ``axis_start`` on."""

    block: int
    block_start: int
    length: int
    axis_start: int


@dataclass(frozen=True)
class AxisRef:
    """How axis ``axis`` of tensor ``param`` maps onto block neurons.

    ``segments``: :class:`AxisSegment` ``(block, block_start, length,
    axis_start)``; neuron ``block_start + u`` occupies positions
    ``axis_start + u * rep + r``.
    """

    param: str
    axis: int
    segments: tuple[AxisSegment, ...]
    rep: int = 1


class GroupAxis(NamedTuple):
    """A tensor axis a group acts on: positions ``start + i * unit + r``
    (``i < group size``, ``r < unit``) of axis ``axis`` of ``param`` are the
    group's unit ``i``."""

    param: str
    axis: int
    start: int
    unit: int


@dataclass(frozen=True)
class PermGroup:
    """A free permutation group (see module docstring)."""

    name: str
    size: int
    kind: str  # "neuron" | "head"
    unit: int
    targets: tuple[BlockPos, ...]
    axes: tuple[GroupAxis, ...]


@dataclass(frozen=True)
class PermutationSpec:
    """Free permutation groups of an architecture and the tensors they act on.

    Build one with :func:`build_spec` (or :func:`weightspace.symmetry.spec_for`).
    """

    groups: tuple[PermGroup, ...]
    blocks: tuple[BlockInfo, ...]
    param_axes: dict[str, tuple[AxisRef, ...]]
    param_shapes: dict[str, tuple[int, ...]]
    float_keys: tuple[str, ...]
    extra_keys: tuple[str, ...]
    arch: str | None = None
    scalings: tuple[ScaleGroup, ...] = ()
    _by_name: dict[str, PermGroup] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({g.name: g for g in self.groups})

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[PermGroup]:
        return iter(self.groups)

    def __getitem__(self, name: str) -> PermGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no permutation group {name!r}; groups: {list(self._by_name)}") from None

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def neuron_groups(self) -> list[PermGroup]:
        return [g for g in self.groups if g.kind == "neuron"]

    @property
    def head_groups(self) -> list[PermGroup]:
        return [g for g in self.groups if g.kind == "head"]

    def num_permutable(self) -> int:
        """Number of neurons (or heads) a permutation can move, over all groups."""
        return sum(g.size * len(g.targets) for g in self.groups)

    def summary(self) -> dict:
        return {
            "arch": self.arch,
            "groups": len(self.groups),
            "neuron_groups": len(self.neuron_groups),
            "head_groups": len(self.head_groups),
            "blocks": len(self.blocks),
            "neurons": sum(b.size for b in self.blocks),
            "fixed_neurons": sum(b.size for b in self.blocks if b.fixed),
            "tensors": len(self.float_keys),
            "tensors_permuted": len(self.param_axes),
            "scale_groups": sum(1 for s in self.scalings if s.has_scale),
            "sign_groups": sum(1 for s in self.scalings if s.has_sign),
        }

    def to_dict(self) -> dict:
        """JSON-friendly description (groups with their tensor axes)."""
        return {
            "summary": self.summary(),
            "groups": [
                {
                    "name": g.name,
                    "kind": g.kind,
                    "size": g.size,
                    "unit": g.unit,
                    "axes": [ax._asdict() for ax in g.axes],
                }
                for g in self.groups
            ],
            "scalings": [
                {
                    "name": s.name,
                    "group": s.group,
                    "size": s.size,
                    "kinds": list(s.kinds),
                    "axes": [ax._asdict() for ax in s.axes],
                }
                for s in self.scalings
            ],
        }


def build_spec(cg: ComputationGraph, structure: Structure | None = None) -> PermutationSpec:
    """The :class:`PermutationSpec` of a traced graph."""
    st = cg.state
    structure = structure or resolve(cg)
    blocks = tuple(BlockInfo(b.size, b.kind, b.producer, b.op, b.fixed) for b in st.blocks)

    param_axes: dict[str, tuple[AxisRef, ...]] = {}
    for name in cg.float_keys:
        axes = cg.param_refs.get(name, {})
        refs = []
        for axis in sorted(axes):
            feat = axes[axis]
            if feat.size != cg.param_shapes[name][axis]:  # pragma: no cover - tracer invariant
                raise AssertionError(
                    f"internal: {name} axis {axis} has {cg.param_shapes[name][axis]} positions, "
                    f"neurons map {feat.size}"
                )
            segs, pos = [], 0
            for s in feat.segs:
                segs.append(AxisSegment(s.block, s.start, s.length, pos))
                pos += s.length * feat.rep
            refs.append(AxisRef(name, axis, tuple(segs), feat.rep))
        if refs:
            param_axes[name] = tuple(refs)

    def members(targets: tuple[BlockPos, ...], size: int, unit: int) -> tuple[GroupAxis, ...]:
        out = []
        for name, refs in param_axes.items():
            for ref in refs:
                for seg in ref.segments:
                    lo, hi = seg.block_start, seg.block_start + seg.length
                    for t in targets:
                        if t.block == seg.block and lo <= t.start and t.start + size * unit <= hi:
                            start = seg.axis_start + (t.start - lo) * ref.rep
                            out.append(GroupAxis(name, ref.axis, start, unit * ref.rep))
        return tuple(out)

    pieces_per_block = {b: len(ps) for b, ps in structure.pieces.items()}
    groups: list[PermGroup] = []
    used: dict[str, int] = {}

    def unique(base: str) -> str:
        k = used.get(base, 0)
        used[base] = k + 1
        return base if k == 0 else f"{base}#{k}"

    for g in structure.neuron_groups:
        first = min(g.pieces, key=lambda p: (p.block, p.start))
        blk = st.blocks[first.block]
        base = blk.producer or f"block{first.block}"
        if pieces_per_block[first.block] > 1:
            base += f"[{first.start}:{first.stop}]"
        targets = tuple(sorted(BlockPos(p.block, p.start) for p in g.pieces))
        groups.append(
            PermGroup(unique(base), g.size, "neuron", 1, targets, members(targets, g.size, 1))
        )
    for h in structure.head_groups:
        b0 = h.regions[0].block
        base = f"{st.blocks[b0].producer or f'block{b0}'}.heads"
        groups.append(
            PermGroup(unique(base), h.heads, "head", h.unit, tuple(h.regions),
                      members(h.regions, h.heads, h.unit))
        )
    return PermutationSpec(
        groups=tuple(groups),
        blocks=blocks,
        param_axes=param_axes,
        param_shapes=dict(cg.param_shapes),
        float_keys=tuple(cg.float_keys),
        extra_keys=tuple(cg.extra_keys),
        arch=cg.arch,
        scalings=derive_scalings(cg, groups),
    )
