"""Optimal-transport fusion (OTFusion, Singh & Jaggi 2020) for any traced
architecture, with heterogeneous widths.

Every model is aligned to a *target* model (whose widths the fused model
takes), one coordinate at a time in graph order (neuron groups; attention
head groups with their nested groups). For a neuron group with ``n_t``
target neurons and ``n_m`` model neurons:

1. Ground metric ``D [n_t, n_m]``: squared distances between neurons, from
   every tensor slice of the group whose *other* neuron axes are already
   aligned (earlier groups, or fixed input/output neurons) -- for a layer
   that is its incoming weights and bias, as in OTFusion; or from the
   neurons' activations on data.
2. Transport ``T [n_t, n_m]`` with uniform marginals: ``ot.emd`` (exact) or
   ``ot.sinkhorn`` (entropic, on ``D / max D``).
3. The group's neurons are replaced by transport-weighted combinations:
   tensors that *compute* a neuron (weight rows, biases, norm parameters,
   running statistics, embeddings) are mapped by the row-normalised
   ``T / T.sum(1)`` (a target neuron is the barycentre of the model neurons
   it receives mass from); tensors that *consume* it (input axes of the next
   layers) by the column-normalised ``T / T.sum(0)`` (a model neuron's
   outgoing weights are split among its target neurons). For a permutation
   both are the permutation; for integer width ratios the aligned model is
   function-preserving when neurons are duplicated.

A group spanning several blocks (residual stream) gets one transport for all
of them. Attention heads are assigned exactly (one head to one head, with
optimal within-head permutations), so head counts and head sizes must agree.
The fused model is the weighted average of the aligned models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from weightspace.merge._common import (
    MergeError,
    check_state_dict,
    coordinates,
    masked_unit_rows,
    model_label,
    nested_rows,
    unit_rows,
)
from weightspace.merge.activations import block_moments, head_costs_from_blocks
from weightspace.merge.assignment import head_assignment
from weightspace.merge.average import average
from weightspace.symmetry import HeadLayout, PermGroup, PermutationSpec

__all__ = ["FusionResult", "ot_fusion", "check_same_family"]


@dataclass
class FusionResult:
    """Result of :func:`ot_fusion`.

    Attributes:
        state_dict: the fused model (the target's shapes).
        aligned: per model, its weights transported into the target's basis
            and widths (the target itself unchanged).
        transports: per model, ``{target group name: T [n_t, n_m] float64}``
            (heads: ``[h, h]`` assignment; empty for the target).
        info: ``{"fallback_groups": [...]}`` groups matched by weights when
            activations were asked for but could not be captured.
    """

    state_dict: dict[str, torch.Tensor]
    aligned: list[dict[str, torch.Tensor]]
    transports: list[dict[str, np.ndarray]]
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------ checks
def check_same_family(specs: Sequence[PermutationSpec], names: Sequence[str] | None = None) -> None:
    """Raise :class:`MergeError` unless the specs describe one architecture
    family that differs at most in widths (same tensors, same groups acting
    on the same tensor axes, same fixed input/output sizes, same kernels)."""
    ref = specs[0]
    for i, s in enumerate(specs[1:], start=1):
        who = f"{model_label(i, names)} vs {model_label(0, names)}"
        if set(s.float_keys) != set(ref.float_keys):
            d = sorted(set(s.float_keys) ^ set(ref.float_keys))[:6]
            raise MergeError(f"{who}: different tensors {d}: not the same architecture family")
        hs = [(g.size, g.unit) for g in s.head_groups]
        hr = [(g.size, g.unit) for g in ref.head_groups]
        if hs != hr:
            raise MergeError(
                f"{who}: attention heads differ ({hs} vs {hr}, heads x head size per attention layer); "
                "OT fusion needs equal head counts and head sizes"
            )
        if len(s.blocks) != len(ref.blocks) or len(s.groups) != len(ref.groups):
            raise MergeError(
                f"{who}: different structure ({len(s.blocks)} vs {len(ref.blocks)} blocks, "
                f"{len(s.groups)} vs {len(ref.groups)} permutation groups)"
            )
        for b, (x, y) in enumerate(zip(s.blocks, ref.blocks)):
            if x.fixed != y.fixed or x.producer != y.producer or (x.fixed and x.size != y.size):
                raise MergeError(f"{who}: block {b} ({y.producer}) differs ({x.size} vs {y.size} neurons, fixed={y.fixed})")
        for g, h in zip(s.groups, ref.groups):
            if g.kind != h.kind or [(p, a) for p, a, *_ in g.axes] != [(p, a) for p, a, *_ in h.axes]:
                raise MergeError(f"{who}: permutation group {h.name!r} acts on different tensors")
            if g.kind == "head" and (g.size != h.size or g.unit != h.unit):
                raise MergeError(
                    f"{who}: head group {h.name!r} has {g.size}x{g.unit} vs {h.size}x{h.unit} "
                    "(heads x head size); OT fusion needs equal head counts and sizes"
                )
        for k in ref.float_keys:
            sa, sb = s.param_shapes[k], ref.param_shapes[k]
            if len(sa) != len(sb):
                raise MergeError(f"{who}: tensor {k!r} has {len(sa)} vs {len(sb)} dimensions")
            neuron_axes = {r.axis for r in ref.param_axes.get(k, ())}
            for ax, (x, y) in enumerate(zip(sa, sb)):
                if ax not in neuron_axes and x != y:
                    raise MergeError(f"{who}: tensor {k!r} axis {ax} is {x} vs {y} (not a neuron axis)")


def _out_axis(spec: PermutationSpec, key: str) -> int | None:
    """The axis of ``key`` whose neurons its own module computes (weight
    rows), or ``None`` (norm parameters, embeddings added to a stream...)."""
    mod = key.rsplit(".", 1)[0] if "." in key else ""
    for ref in spec.param_axes.get(key, ()):
        if any(spec.blocks[b].producer == mod for b, *_ in ref.segments):
            return ref.axis
    return None


# -------------------------------------------------------------- alignment
class _Aligner:
    """Block-level transport maps of one model onto the target, and the
    tensor alignment they induce."""

    def __init__(self, spec_t: PermutationSpec, spec_m: PermutationSpec, sd_t, sd_m) -> None:
        self.st, self.sm = spec_t, spec_m
        self.T = {k: v.detach().double() for k, v in sd_t.items() if v.is_floating_point()}
        self.M = {k: v.detach().double() for k, v in sd_m.items() if v.is_floating_point()}
        nb = len(spec_t.blocks)
        self.row = [torch.zeros(spec_t.blocks[b].size, spec_m.blocks[b].size, dtype=torch.float64) for b in range(nb)]
        self.col = [r.clone() for r in self.row]
        self.pending = [0] * nb  # groups of the block not yet aligned
        covered = [torch.zeros(spec_t.blocks[b].size, dtype=torch.bool) for b in range(nb)]
        for g in spec_t.groups:
            for b, s in g.targets:
                self.pending[b] += 1
                covered[b][s : s + g.size * g.unit] = True
        for b in range(nb):
            free = ~covered[b]
            if free.any():
                if spec_t.blocks[b].size != spec_m.blocks[b].size:
                    raise MergeError(
                        f"block {b} ({spec_t.blocks[b].producer}) has unpermutable neurons and different "
                        f"sizes ({spec_t.blocks[b].size} vs {spec_m.blocks[b].size})"
                    )
                idx = torch.nonzero(free).flatten()
                self.row[b][idx, idx] = 1.0
                self.col[b][idx, idx] = 1.0
        self.out_axis = {k: _out_axis(spec_m, k) for k in spec_m.param_axes}

    def ready(self, b: int) -> bool:
        return self.pending[b] == 0

    def done(self, targets) -> None:
        for b, _ in targets:
            self.pending[b] -= 1

    def axis_matrix(self, key: str, axis: int) -> torch.Tensor:
        """``[len_t, len_m]`` linear map of one tensor axis."""
        rt = next(r for r in self.st.param_axes[key] if r.axis == axis)
        rm = next(r for r in self.sm.param_axes[key] if r.axis == axis)
        side = self.row if self.out_axis[key] in (None, axis) else self.col
        A = torch.zeros(self.st.param_shapes[key][axis], self.sm.param_shapes[key][axis], dtype=torch.float64)
        eye = torch.eye(rt.rep, dtype=torch.float64)
        for (b, bst, lt, at), (bm, bsm, lm, am) in zip(rt.segments, rm.segments):
            sub = side[b][bst : bst + lt, bsm : bsm + lm]
            A[at : at + lt * rt.rep, am : am + lm * rm.rep] = torch.kron(sub, eye)
        return A

    def align(self, key: str, skip_axis: int | None = None) -> torch.Tensor:
        t = self.M[key]
        for ref in self.sm.param_axes.get(key, ()):
            if ref.axis == skip_axis:
                continue
            A = self.axis_matrix(key, ref.axis)
            t = torch.movedim(torch.tensordot(A, t, dims=([1], [ref.axis])), 0, ref.axis)
        return t

    def usable(self, key: str, axis: int) -> bool:
        """All other neuron axes of ``key`` are aligned already."""
        return all(
            self.ready(b) for r in self.sm.param_axes.get(key, ()) if r.axis != axis for b, *_ in r.segments
        )

    # ---- ground metrics from weights
    def neuron_cost(self, gt: PermGroup, gm: PermGroup) -> torch.Tensor | None:
        D = torch.zeros(gt.size, gm.size, dtype=torch.float64)
        used = 0
        for (p, ax, st_t, u), (_, _, st_m, um) in zip(gt.axes, gm.axes):
            if p not in self.M or not self.usable(p, ax):
                continue
            a = unit_rows(self.T[p], ax, st_t, gt.size, u)
            b = unit_rows(self.align(p, skip_axis=ax), ax, st_m, gm.size, um)
            D += _sqdist(a, b)
            used += 1
        return D.clamp_min(0) if used else None

    def head_cost(self, Lt: HeadLayout, Lm: HeadLayout) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        h = Lt.group.size
        S, used = [], 0
        for subs_t, subs_m in zip(Lt.subs, Lm.subs):
            n = subs_t[0].size
            Dk = torch.zeros(h * n, h * n, dtype=torch.float64)
            for e, (p, ax, _, u) in enumerate(subs_t[0].axes):
                if p not in self.M or not self.usable(p, ax):
                    continue
                bt = self.align(p, skip_axis=ax)
                a = nested_rows(self.T[p], ax, subs_t, e, n, u)
                b = nested_rows(bt, ax, subs_m, e, n, u)
                Dk += _sqdist(a, b)
                used += 1
            S.append(-Dk.view(h, n, h, n))
        R = torch.zeros(h, h, dtype=torch.float64)
        Ht, Hm = Lt.group, Lm.group
        for (p, ax, st, ue), (_, _, stm, _), mask in zip(Ht.axes, Hm.axes, Lt.uncovered):
            if p not in self.M or not bool(mask.any()) or not self.usable(p, ax):
                continue
            sel = mask.repeat_interleave(ue // Ht.unit)
            a = masked_unit_rows(self.T[p], ax, st, h, ue, sel)
            b = masked_unit_rows(self.align(p, skip_axis=ax), ax, stm, h, ue, sel)
            R -= _sqdist(a, b)
            used += 1
        return (S, R) if used else None

    # ---- setting maps
    def set_transport(self, gt: PermGroup, gm: PermGroup, T: torch.Tensor) -> None:
        row = T / T.sum(1, keepdim=True).clamp_min(1e-300)
        col = T / T.sum(0, keepdim=True).clamp_min(1e-300)
        for (b, st), (_, sm) in zip(gt.targets, gm.targets):
            self.row[b][st : st + gt.size, sm : sm + gm.size] = row
            self.col[b][st : st + gt.size, sm : sm + gm.size] = col
        self.done(gt.targets)

    def set_heads(self, Lt: HeadLayout, Lm: HeadLayout, sigma, pis) -> None:
        Ht, Hm = Lt.group, Lm.group
        for subs_t, subs_m, pi in zip(Lt.subs, Lm.subs, pis):
            n = subs_t[0].size
            for i in range(Ht.size):
                j = int(sigma[i])
                for (b, st), (_, sm) in zip(subs_t[i].targets, subs_m[j].targets):
                    for r in range(n):
                        for M in (self.row, self.col):
                            M[b][st + r, sm + int(pi[j][r])] = 1.0
            for i in range(Ht.size):
                self.done(subs_t[i].targets)
        for t, ((b, rs), (_, rsm)) in enumerate(zip(Ht.targets, Hm.targets)):
            for o in Lt.uncovered_offsets(t):
                for i in range(Ht.size):
                    j = int(sigma[i])
                    for M in (self.row, self.col):
                        M[b][rs + i * Ht.unit + o, rsm + j * Hm.unit + o] = 1.0
        self.done(Ht.targets)

    def aligned_state_dict(self, sd_t: Mapping[str, torch.Tensor], sd_m: Mapping[str, torch.Tensor]) -> dict:
        out = {}
        for k, v in sd_t.items():
            if not v.is_floating_point():
                # the model's own copy, so that the final average applies the
                # shared rule for non-floating tensors (merge_non_float)
                if tuple(sd_m[k].shape) != tuple(v.shape):
                    raise MergeError(
                        f"non-floating tensor {k!r}: {tuple(sd_m[k].shape)} vs {tuple(v.shape)}; "
                        "integer/bool buffers of different widths cannot be fused"
                    )
                out[k] = sd_m[k].detach().clone()
            elif k in self.sm.param_axes:
                out[k] = self.align(k).to(v.dtype)
            else:
                if tuple(sd_m[k].shape) != tuple(v.shape):  # pragma: no cover - family check
                    raise MergeError(f"tensor {k!r}: {tuple(sd_m[k].shape)} vs {tuple(v.shape)}")
                out[k] = sd_m[k].detach().clone().to(v.dtype)
        return out


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of the rows of ``a [n, d]`` and ``b [m, d]``: ``[n, m]``."""
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T


def _transport(D: torch.Tensor, solver: str, reg: float, num_itermax: int) -> torch.Tensor:
    import ot

    n_t, n_m = D.shape
    a = np.full(n_t, 1.0 / n_t)
    b = np.full(n_m, 1.0 / n_m)
    M = D.detach().double().numpy()
    if solver == "emd":
        T = ot.emd(a, b, M, numItermax=max(num_itermax, 100000))
    elif solver == "sinkhorn":
        scale = float(M.max())
        T = ot.sinkhorn(a, b, M / scale if scale > 0 else M, reg, numItermax=num_itermax)
    else:
        raise MergeError(f"solver must be 'emd' or 'sinkhorn', got {solver!r}")
    T = torch.as_tensor(np.asarray(T), dtype=torch.float64)
    if not torch.isfinite(T).all() or float(T.sum()) <= 0:
        raise MergeError(f"{solver} returned an invalid transport plan (try a larger reg for sinkhorn)")
    return T


def _coordinate_order(spec: PermutationSpec) -> list[tuple[str, Any]]:
    """The coordinates (:func:`~weightspace.merge._common.coordinates`) in
    graph order: by the first block they touch."""
    coords = coordinates(spec)

    def first_block(c):
        if c[0] == "neuron":
            return min(b for b, _ in c[1].targets)
        return min(b for b, _ in c[1].group.targets)

    return sorted(coords, key=first_block)


def ot_fusion(
    sds: Sequence[Mapping[str, torch.Tensor]],
    specs: Sequence[PermutationSpec] | PermutationSpec,
    *,
    target: int = 0,
    weights: Sequence[float] | None = None,
    solver: str = "emd",
    reg: float = 0.01,
    num_itermax: int = 1000,
    ground: str = "weights",
    models: Sequence[nn.Module] | None = None,
    data: Any = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    names: Sequence[str] | None = None,
) -> FusionResult:
    """Fuse ``N`` models of one architecture family by optimal transport.

    Args:
        sds: ``N`` state_dicts (widths may differ).
        specs: one spec per model (or one shared spec when widths agree).
        target: index of the model whose widths (and basis) the fused model
            takes; fuse a wide and a narrow model into either width.
        weights: averaging weights of the aligned models (default uniform).
        solver: ``"emd"`` (exact OT, ``ot.emd``) or ``"sinkhorn"``
            (entropic, ``ot.sinkhorn`` with ``reg`` on the max-normalised cost).
        ground: ``"weights"`` or ``"activations"`` (needs ``models`` -- one
            module per model -- and ``data``); groups whose activations cannot
            be captured use weights.
        names: model labels for error messages.

    Returns:
        :class:`FusionResult`.
    """
    n = len(sds)
    if n < 1:
        raise MergeError("ot_fusion needs at least one model")
    specs = [specs] * n if isinstance(specs, PermutationSpec) else list(specs)
    if len(specs) != n:
        raise MergeError(f"{len(specs)} specs for {n} models")
    if not 0 <= target < n:
        raise MergeError(f"target {target} out of range for {n} models")
    for i, (sd, sp) in enumerate(zip(sds, specs)):
        check_state_dict(sd, sp, model_label(i, names))
    check_same_family(specs, names)
    if ground not in ("weights", "activations"):
        raise MergeError(f"ground must be 'weights' or 'activations', got {ground!r}")
    if ground == "activations" and (models is None or len(models) != n or data is None):
        raise MergeError("ground='activations' needs one module per model (models=...) and data=...")
    spec_t = specs[target]
    order_t = _coordinate_order(spec_t)
    aligned, transports, fallback = [], [], set()
    for i in range(n):
        if i == target:
            aligned.append({k: v.detach().clone() for k, v in sds[i].items()})
            transports.append({})
            continue
        spec_m = specs[i]
        order_m = _coordinate_order(spec_m)
        al = _Aligner(spec_t, spec_m, sds[target], sds[i])
        acts: dict = {}
        if ground == "activations":
            moments, _ = block_moments(
                models[target], models[i], data, spec_t, spec_b=spec_m,
                batch_size=batch_size, max_samples=max_samples,
            )
            acts = {b: m.sqdist() for b, m in moments.items()}
        trans: dict[str, np.ndarray] = {}
        for (kind, ct), (_, cm) in zip(order_t, order_m):
            if kind == "neuron":
                if ground == "activations" and all(b in acts for b, _ in ct.targets):
                    D = sum(acts[b][s : s + ct.size, sm : sm + cm.size] for (b, s), (_, sm) in zip(ct.targets, cm.targets))
                else:
                    if ground == "activations":
                        fallback.add(ct.name)
                    D = al.neuron_cost(ct, cm)
                    if D is None:
                        raise MergeError(f"group {ct.name!r}: no tensor slice with aligned inputs to build a ground metric")
                T = _transport(D, solver, reg, num_itermax)
                al.set_transport(ct, cm, T)
                trans[ct.name] = T.numpy()
            else:
                if ground == "activations" and all(b in acts for b, _ in ct.group.targets):
                    S, R = head_costs_from_blocks(ct, cm, {b: -d for b, d in acts.items()})
                else:
                    if ground == "activations":
                        fallback.add(ct.group.name)
                    res = al.head_cost(ct, cm)
                    if res is None:
                        raise MergeError(f"head group {ct.group.name!r}: no aligned tensor slice for a ground metric")
                    S, R = res
                sigma, pis, _ = head_assignment(S, R)
                al.set_heads(ct, cm, sigma, pis)
                P = np.zeros((ct.group.size, ct.group.size))
                P[np.arange(len(sigma)), sigma] = 1.0 / len(sigma)
                trans[ct.group.name] = P
        aligned.append(al.aligned_state_dict(sds[target], sds[i]))
        transports.append(trans)
    fused = average(aligned, weights, names=names)
    return FusionResult(fused, aligned, transports, {"fallback_groups": sorted(fallback)})
