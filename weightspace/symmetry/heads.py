"""Attention heads of a spec: which neuron groups are nested inside heads.

A head group permutes ``size`` heads of ``unit`` neurons; neuron groups that
lie inside one head (q/k pairs, v) permute neurons *within* a head. Aligning
attention layers treats a head group together with its nested groups as one
coordinate; :func:`split_groups` finds that nesting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightspace.errors import SpecError
from weightspace.symmetry.spec import PermGroup, PermutationSpec

__all__ = ["HeadLayout", "split_groups"]


@dataclass(frozen=True)
class HeadLayout:
    """An attention head group and the neuron groups nested inside its heads.

    Attributes:
        group: the head group (``size`` heads of ``unit`` neurons).
        subs: ``subs[k][j]`` = the nested neuron group of kind ``k`` (e.g.
            q/k pairs, v) at head slot ``j``; ``len(subs[k]) == group.size``.
        uncovered: per entry of ``group.axes``, a bool mask ``[unit]`` of the
            within-head positions no nested group permutes (usually none).
    """

    group: PermGroup
    subs: tuple[tuple[PermGroup, ...], ...]
    uncovered: tuple[torch.Tensor, ...]

    def uncovered_offsets(self, region: int) -> list[int]:
        """Within-head offsets (``0 <= o < group.unit``) that no nested group
        permutes, in head region ``group.targets[region]`` (read at its first
        head; every head has the same layout)."""
        rb, rs = self.group.targets[region]
        unit = self.group.unit
        covered = torch.zeros(unit, dtype=torch.bool)
        for subs in self.subs:
            for gb, gs in subs[0].targets:
                if gb == rb and rs <= gs < rs + unit:
                    covered[gs - rs : gs - rs + subs[0].size] = True
        return torch.nonzero(~covered).flatten().tolist()


def split_groups(spec: PermutationSpec) -> tuple[list[PermGroup], list[HeadLayout]]:
    """Neuron groups that are not inside attention heads, and the head layouts.

    Returns:
        ``(free, layouts)``: the neuron groups outside every head (in spec
        order) and one :class:`HeadLayout` per head group.

    Raises:
        SpecError: a neuron group straddles a head boundary or only partly
            lies inside heads (not a structure the matchers understand).
    """
    nested: set[str] = set()
    layouts: list[HeadLayout] = []
    for H in spec.head_groups:
        regions = list(H.targets)
        span = H.size * H.unit
        by_key: dict[tuple, dict[int, PermGroup]] = {}
        covered: set[tuple[int, int]] = set()
        for g in spec.neuron_groups:
            locs = []
            for b, ts in g.targets:
                hit = None
                for ri, (rb, rs) in enumerate(regions):
                    if rb == b and rs <= ts < rs + span:
                        hit = (ri, (ts - rs) // H.unit, (ts - rs) % H.unit)
                locs.append(hit)
            if all(h is None for h in locs):
                continue
            if any(h is None for h in locs) or len({h[1] for h in locs}) != 1 or any(
                h[2] + g.size > H.unit for h in locs
            ):
                raise SpecError(
                    f"neuron group {g.name!r} lies partly outside the heads of {H.name!r} or spans "
                    "several heads; weightspace.merge cannot align it"
                )
            key = (g.size,) + tuple((h[0], h[2]) for h in locs)
            slot = locs[0][1]
            by_key.setdefault(key, {})[slot] = g
            nested.add(g.name)
            for b, ts in g.targets:
                covered.update((b, ts + r) for r in range(g.size))
        subs = []
        for key, slots in sorted(by_key.items()):
            if sorted(slots) != list(range(H.size)):
                raise SpecError(f"head group {H.name!r}: nested groups {key} missing for some heads")
            subs.append(tuple(slots[j] for j in range(H.size)))
        unc = []
        for p, ax, st, ue in H.axes:
            b, pos, _ = _entry_region(spec, H, p, ax, st)
            unc.append(torch.tensor([(b, pos + o) not in covered for o in range(H.unit)]))
        layouts.append(HeadLayout(H, tuple(subs), tuple(unc)))
    free = [g for g in spec.neuron_groups if g.name not in nested]
    return free, layouts


def _entry_region(spec: PermutationSpec, H: PermGroup, p: str, ax: int, st: int) -> tuple[int, int, int]:
    """``(block, block position, rep)`` of axis position ``st`` of ``p``."""
    for ref in spec.param_axes[p]:
        if ref.axis != ax:
            continue
        for b, bs, length, astart in ref.segments:
            if astart <= st < astart + length * ref.rep:
                return b, bs + (st - astart) // ref.rep, ref.rep
    raise SpecError(f"internal: head group {H.name!r} axis entry ({p}, {ax}, {st}) has no segment")
