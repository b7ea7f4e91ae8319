"""From tracing constraints to free permutation groups.

1. Cut points: block boundaries, slice/group/head boundaries and the ends of
   every tie and parameter reference. Cuts propagate across ties until they
   agree on both sides (a tie maps piece to piece).
2. Pieces: the intervals between cuts of each block.
3. Neuron groups: connected components of pieces under ties. A component
   containing a fixed block is fixed. Components of one-neuron pieces are
   trivial and dropped.
4. Head groups: attention splits tied through batch dimensions of
   ``q @ k^T`` / ``attn @ v`` form components; each component whose heads
   can be moved as wholes (no constraint cuts inside its region except at
   head boundaries) becomes a group that permutes heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from weightspace.trace.channels import ChannelState, Feat, Seg, slice_segs
from weightspace.trace.tracer import ComputationGraph


# A piece is a slice of a block, like a Seg: ``Piece(block, start, stop)``.
Piece = Seg


class BlockPos(NamedTuple):
    """Neuron ``start`` of block ``block``: where a group's run of units begins."""

    block: int
    start: int


@dataclass(frozen=True)
class NeuronGroupDef:
    """Pieces that share one permutation (each of length ``size``)."""

    pieces: tuple[Piece, ...]
    size: int


@dataclass(frozen=True)
class HeadGroupDef:
    """Regions ``BlockPos(block, start)`` of ``heads`` consecutive units of
    ``unit`` neurons each; one permutation moves whole units in all regions."""

    regions: tuple[BlockPos, ...]
    heads: int
    unit: int


@dataclass
class Structure:
    pieces: dict[int, list[Piece]]  # block -> sorted pieces
    neuron_groups: list[NeuronGroupDef]
    fixed_pieces: list[Piece]
    head_groups: list[HeadGroupDef]


def resolve(cg: ComputationGraph) -> Structure:
    """Compute pieces, neuron groups and head groups of a traced graph."""
    st = cg.state
    nb = len(st.blocks)
    cuts: list[set[int]] = [{0, b.size} for b in st.blocks]
    for b, cs in st.cuts.items():
        cuts[b] |= cs
    for b, cs in st.slice_cuts.items():
        cuts[b] |= cs
    for t in st.ties:
        cuts[t.a.block] |= {t.a.start, t.a.stop}
        cuts[t.b.block] |= {t.b.start, t.b.stop}
    for axes in cg.param_refs.values():
        for feat in axes.values():
            for s in feat.segs:
                cuts[s.block] |= {s.start, s.stop}
    head_cuts = _head_cuts(st)
    for b, cs in head_cuts.items():
        cuts[b] |= cs

    # propagate cuts across ties until stable
    changed = True
    while changed:
        changed = False
        for t in st.ties:
            for (x, y) in ((t.a, t.b), (t.b, t.a)):
                off = y.start - x.start
                inner = {c + off for c in cuts[x.block] if x.start < c < x.stop}
                if not inner <= cuts[y.block]:
                    cuts[y.block] |= inner
                    changed = True

    pieces: dict[int, list[Piece]] = {}
    index: dict[tuple[int, int], int] = {}
    plist: list[Piece] = []
    for b in range(nb):
        cs = sorted(cuts[b])
        pieces[b] = [Piece(b, lo, hi) for lo, hi in zip(cs[:-1], cs[1:])]
        for p in pieces[b]:
            index[(b, p.start)] = len(plist)
            plist.append(p)

    parent = list(range(len(plist)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in st.ties:
        # walk the pieces of side a and the matching pieces of side b
        pa = [p for p in pieces[t.a.block] if t.a.start <= p.start and p.stop <= t.a.stop]
        for p in pa:
            q_start = t.b.start + (p.start - t.a.start)
            j = index[(t.b.block, q_start)]
            i = index[(p.block, p.start)]
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)

    comps: dict[int, list[int]] = {}
    for i in range(len(plist)):
        comps.setdefault(find(i), []).append(i)
    neuron_groups: list[NeuronGroupDef] = []
    fixed: list[Piece] = []
    for root in sorted(comps):
        members = [plist[i] for i in comps[root]]
        if any(st.blocks[p.block].fixed for p in members):
            fixed.extend(members)
            continue
        if members[0].length <= 1:
            continue
        neuron_groups.append(NeuronGroupDef(tuple(members), members[0].length))

    head_groups = _head_groups(cg, cuts, pieces, fixed)
    return Structure(pieces, neuron_groups, fixed, head_groups)


def _head_cuts(st: ChannelState) -> dict[int, set[int]]:
    """Every split (reshape of a neuron axis into several axes) cuts its
    neurons at the boundaries of all but its innermost level: without that,
    a permutation could move a neuron from one head to another."""
    out: dict[int, set[int]] = {}
    for sp in st.splits:
        total = sum(s.length for s in sp.segs)
        units = set()
        stride = total
        for size in sp.sizes[:-1]:
            stride //= size
            units |= set(range(0, total + 1, stride))
        f = Feat(sp.segs)
        pos = 0
        for s in f.segs:
            for u in units:
                if pos <= u <= pos + s.length:
                    out.setdefault(s.block, set()).add(s.start + (u - pos))
            pos += s.length
    return out


def _head_groups(cg: ComputationGraph, cuts, pieces, fixed) -> list[HeadGroupDef]:
    st = cg.state
    comps: dict[int, list[int]] = {}
    for sid in sorted(st.attention_splits):
        comps.setdefault(st.head_find(sid), []).append(sid)
    fixed_blocks = {p.block for p in fixed}
    groups: list[HeadGroupDef] = []
    for root, sids in comps.items():
        if root in st.head_disabled:
            continue
        shapes = {st.splits[s].sizes for s in sids}
        if len(shapes) != 1:
            continue
        (shape,) = shapes
        if len(shape) != 2:
            continue
        heads, unit = shape
        if heads <= 1:
            continue
        regions = []
        ok = True
        for s in sids:
            segs = st.splits[s].segs
            if len(segs) != 1:
                ok = False
                break
            regions.append(BlockPos(segs[0].block, segs[0].start))
        if not ok:
            continue
        regions = sorted(set(regions))
        span = heads * unit
        if any(r.block in fixed_blocks for r in regions):
            continue
        if not _heads_movable(cg, regions, span, unit, sids):
            continue
        groups.append(HeadGroupDef(tuple(regions), heads, unit))
    return groups


def _heads_movable(cg: ComputationGraph, regions, span: int, unit: int, sids) -> bool:
    """Whole heads may move only if nothing else looks inside the region at a
    finer grain than 'the whole region'."""
    st = cg.state
    region_set = set(regions)

    def overlaps(block: int, lo: int, hi: int) -> BlockPos | None:
        for reg in regions:
            if reg.block == block and lo < reg.start + span and reg.start < hi:
                return reg
        return None

    def contains_region(block: int, lo: int, hi: int, reg: BlockPos) -> bool:
        return reg.block == block and lo <= reg.start and reg.start + span <= hi

    for t in st.ties:
        if t.kind == "within":
            continue
        for x, y in ((t.a, t.b), (t.b, t.a)):
            reg = overlaps(x.block, x.start, x.stop)
            if reg is None:
                continue
            if not contains_region(x.block, x.start, x.stop, reg):
                return False
            # the tied side must be one of our regions at the same offset
            other = BlockPos(y.block, y.start + (reg.start - x.start))
            if other not in region_set:
                return False
    for axes in cg.param_refs.values():
        for feat in axes.values():
            for s in feat.segs:
                reg = overlaps(s.block, s.start, s.stop)
                if reg is not None and not contains_region(s.block, s.start, s.stop, reg):
                    return False
    for source in (st.cuts, st.slice_cuts):
        for b, cs in source.items():
            for reg in regions:
                if reg.block != b:
                    continue
                if any(reg.start < c < reg.start + span for c in cs):
                    return False
    # splits of these regions that are not part of the attention component
    for k, sp in enumerate(st.splits):
        if k in sids:
            continue
        for s in sp.segs:
            reg = overlaps(s.block, s.start, s.stop)
            if reg is not None and not contains_region(s.block, s.start, s.stop, reg):
                return False
    return True


__all__ = ["BlockPos", "Piece", "NeuronGroupDef", "HeadGroupDef", "Structure", "resolve", "slice_segs"]
