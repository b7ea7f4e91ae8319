"""Activation statistics of two networks on the same data: streaming
second moments between the neurons of each block, captured at the op that
creates the block (``spec.blocks[b].producer``) through an fx trace, and
their conversion into the inputs of the head solver.

Used by :func:`~weightspace.merge.matching.activation_matching` (Pearson
correlation) and :func:`~weightspace.merge.ot_fusion.ot_fusion` with
``ground="activations"`` (mean squared distance).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from weightspace.merge._common import MergeError, as_samples, channel_axis, check_finite_data, iter_batches
from weightspace.symmetry import HeadLayout, PermutationSpec
from weightspace.similarity.capture import ActivationCapture, capturable_layers

__all__ = ["block_moments", "head_costs_from_blocks"]


def block_moments(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    spec_a: PermutationSpec,
    blocks: Sequence[int] | None = None,
    *,
    spec_b: PermutationSpec | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
) -> tuple[dict[int, "_CrossCorr"], list[int]]:
    """Streaming second moments between the neurons of each block of ``a``
    and ``b`` (the same architecture family; widths may differ).

    Activations are the outputs of the op that creates the block
    (``spec.blocks[b].producer``), captured through an fx trace; spatial
    positions and tokens count as samples.

    Args:
        data: ``x`` ``(N, ...)``, ``(x, y)`` or an iterable of batches.
        blocks: block indices (default: every non-fixed block).
        spec_b: ``b``'s spec when its widths differ (default ``spec_a``).

    Returns:
        ``({block: accumulator with .corr() / .sqdist() [size_a, size_b]},
        blocks whose producer output could not be captured)``.
    """

    spec_b = spec_b or spec_a
    want = set(range(len(spec_a.blocks))) if blocks is None else set(blocks)
    want = {b for b in want if not spec_a.blocks[b].fixed}
    plan, missing = _capture_plan(model_a, spec_a, want)
    layers = sorted({v[0] for v in plan.values()})
    acc = {b: _CrossCorr(spec_a.blocks[b].size, spec_b.blocks[b].size) for b in plan}
    if layers:
        cap_a, cap_b = ActivationCapture(model_a, layers), ActivationCapture(model_b, layers)
        seen = 0
        dtype = next(model_a.parameters()).dtype
        for x, _ in iter_batches(data, batch_size, max_samples):
            x = torch.as_tensor(x)
            check_finite_data(x)
            if x.is_floating_point():
                x = x.to(dtype)
            seen += x.shape[0]
            oa, ob = cap_a(x), cap_b(x)
            for b, (layer, axis) in list(plan.items()):
                ta, tb = oa[layer], ob[layer]
                ok = (
                    isinstance(ta, torch.Tensor)
                    and isinstance(tb, torch.Tensor)
                    and ta.ndim >= 2
                    and ta.shape[axis] == spec_a.blocks[b].size
                    and tb.shape[axis] == spec_b.blocks[b].size
                )
                if not ok:
                    missing.append(b)
                    del plan[b], acc[b]
                    continue
                acc[b].update(as_samples(ta, axis), as_samples(tb, axis))
        if seen == 0:
            raise MergeError("data yielded no samples to capture activations from")
    return acc, sorted(set(missing))


def head_costs_from_blocks(
    L_a: HeadLayout, L_b: HeadLayout, mats: Mapping[int, torch.Tensor]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Head-solver inputs from block-level neuron similarities.

    Args:
        L_a, L_b: the same head group in ``a``'s and ``b``'s spec.
        mats: ``{block: [size_a, size_b]}`` similarity of neurons.

    Returns:
        ``S`` (per nested kind ``[h, n_k, h, n_k]``) and ``R [h, h]`` as
        taken by the head solver.
    """
    H, Hb = L_a.group, L_b.group
    h = H.size
    S = []
    for subs, subs_b in zip(L_a.subs, L_b.subs):
        n = subs[0].size
        Sk = torch.zeros(h * n, h * n, dtype=torch.float64)
        for t in range(len(subs[0].targets)):
            b = subs[0].targets[t][0]
            ia = torch.cat([torch.arange(g.targets[t][1], g.targets[t][1] + n) for g in subs])
            ib = torch.cat([torch.arange(g.targets[t][1], g.targets[t][1] + n) for g in subs_b])
            Sk += mats[b][ia][:, ib]
        S.append(Sk.view(h, n, h, n))
    R = torch.zeros(h, h, dtype=torch.float64)
    for t, ((rb, rs), (_, rs_b)) in enumerate(zip(H.targets, Hb.targets)):
        for o in L_a.uncovered_offsets(t):
            pa = rs + torch.arange(h) * H.unit + o
            pb = rs_b + torch.arange(h) * Hb.unit + o
            R += mats[rb][pa][:, pb]
    return S, R


# ------------------------------------------------------------------ helpers
class _CrossCorr:
    """Streaming second moments of two ``(m, n_a)`` / ``(m, n_b)`` streams:
    Pearson cross-correlation and mean squared distance ``[n_a, n_b]``."""

    def __init__(self, n_a: int, n_b: int | None = None) -> None:
        n_b = n_a if n_b is None else n_b
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.m = 0
        self.sa, self.sb, self.saa, self.sbb, self.sab = z(n_a), z(n_b), z(n_a), z(n_b), z(n_a, n_b)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.double(), b.double()
        self.m += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab += a.T @ b

    def corr(self) -> torch.Tensor:
        """Pearson correlation ``[n_a, n_b]`` over samples."""
        m = max(self.m, 1)
        ma, mb = self.sa / m, self.sb / m
        cov = self.sab / m - ma[:, None] * mb[None, :]
        sa = (self.saa / m - ma**2).clamp_min(0).sqrt()
        sb = (self.sbb / m - mb**2).clamp_min(0).sqrt()
        den = sa[:, None] * sb[None, :]
        # dead (constant) neurons correlate 0 with everything
        return torch.where(den > 1e-12, cov / den.clamp_min(1e-12), torch.zeros_like(cov))

    def sqdist(self) -> torch.Tensor:
        """``E[(a_i - b_j)^2]`` over samples."""
        m = max(self.m, 1)
        return (self.saa[:, None] / m + self.sbb[None, :] / m - 2 * self.sab / m).clamp_min(0)


def _capture_plan(model: nn.Module, spec: PermutationSpec, blocks: set[int]) -> tuple[dict[int, tuple[str, int]], list[int]]:
    """Which blocks can be captured as module outputs: ``{block: (layer, axis)}``
    and the blocks that cannot (their groups fall back to weights)."""

    names = set(capturable_layers(model))
    mods = dict(model.named_modules())
    plan, missing = {}, []
    for b in sorted(blocks):
        prod = spec.blocks[b].producer
        if prod in names and prod in mods:
            plan[b] = (prod, channel_axis(mods[prod]))
        else:
            missing.append(b)
    return plan, missing
