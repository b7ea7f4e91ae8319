"""Fixing variance collapse of merged models: BatchNorm statistics reset and
REPAIR (Jordan et al. 2023, "REPAIR: REnormalizing Permuted Activations for
Interpolation Repair").

Interpolated networks lose activation variance layer after layer. REPAIR
measures, for every hidden block, the per-neuron mean and standard deviation
of the block's pre-activation in each endpoint model, interpolates them, and
rescales the merged model's neurons to match. Here the correction is folded
exactly into the producing layer's weight and bias
(``W' = s * W``, ``b' = s * (b - mu_merged) + mu_target``,
``s = sigma_target / sigma_merged``), so the result is a plain state_dict of
the same architecture. Blocks are corrected in graph order (each correction
changes the statistics downstream). For networks with BatchNorm, the
BatchNorm running statistics are re-estimated (``reset_bn_stats``) before and
after the corrections -- for BatchNorm networks that reset is what REPAIR
amounts to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from weightspace.core import permutation_spec
from weightspace.merge._common import (
    MergeError,
    as_samples,
    channel_axis,
    check_finite_data,
    instantiate,
    iter_batches,
)
from weightspace.similarity.capture import ActivationCapture, capturable_layers
from weightspace.symmetry.spec import PermutationSpec

__all__ = ["RepairPlan", "repair", "repair_plan", "reset_bn_stats"]


def _bn_modules(m: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]


def _reset_bn_(m: nn.Module, data: Any, batch_size: int, max_samples: int | None) -> None:
    """Re-estimate every BatchNorm's running statistics of ``m`` in place
    (cumulative average over ``data``)."""
    bns = _bn_modules(m)
    for bn in bns:
        if not bn.track_running_stats or bn.running_mean is None:
            raise MergeError(f"BatchNorm {type(bn).__name__} does not track running statistics; nothing to reset")
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: exact mean over batches
    flags = [(x, x.training) for x in m.modules()]
    m.eval()
    for bn in bns:
        bn.train()
    seen = 0
    try:
        with torch.no_grad():
            for x, _ in iter_batches(data, batch_size, max_samples):
                check_finite_data(x)
                if x.shape[0] < 2:
                    continue
                m(x)
                seen += x.shape[0]
    finally:
        for x, f in flags:
            x.training = f
    if seen == 0:
        raise MergeError("reset_bn_stats: data yielded no batch of at least 2 samples")


def reset_bn_stats(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    data: Any,
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
) -> dict[str, torch.Tensor]:
    """``sd`` with every BatchNorm's running mean/var re-estimated on ``data``.

    Args:
        model: module template of the architecture (not modified).
        sd: weights (e.g. a merged model).
        data: inputs ``(N, ...)``, ``(x, y)`` or an iterable of batches.

    Returns:
        new state_dict.

    Raises:
        MergeError: the architecture has no BatchNorm, or no data.
    """
    m = instantiate(model, sd)
    if not _bn_modules(m):
        raise MergeError(f"{type(model).__name__} has no BatchNorm layers: there are no statistics to reset")
    _reset_bn_(m, data, batch_size, max_samples)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@dataclass(frozen=True)
class RepairPlan:
    """Blocks REPAIR corrects: ``(block index, producer module path, output axis)``,
    in graph order, and the hidden blocks it cannot correct (no bias, or the
    producer is not a Linear/Conv whose output can be captured)."""

    blocks: tuple[tuple[int, str, int], ...]
    skipped: tuple[str, ...]


def repair_plan(model: nn.Module, spec: PermutationSpec) -> RepairPlan:
    """Which hidden blocks of ``model`` REPAIR can correct (see :class:`RepairPlan`)."""
    names = set(capturable_layers(model))
    mods = dict(model.named_modules())
    todo, skipped = [], []
    for b, blk in enumerate(spec.blocks):
        if blk.kind != "hidden":
            continue
        mod = mods.get(blk.producer)
        ok = (
            isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
            and getattr(mod, "bias", None) is not None
            and blk.producer in names
            and mod.weight.shape[0] == blk.size
        )
        if ok:
            todo.append((b, blk.producer, channel_axis(mod)))
        else:
            skipped.append(blk.producer)
    return RepairPlan(tuple(todo), tuple(skipped))


def _stats(m: nn.Module, layers: Sequence[tuple[str, int]], data, batch_size, max_samples):
    """Per layer: (mean, std) over samples and positions, float64 ``[C]``."""
    names = sorted({l for l, _ in layers})
    cap = ActivationCapture(m, names)
    axis = dict(layers)
    acc = {l: [0, 0.0, 0.0] for l in names}
    seen = 0
    for x, _ in iter_batches(data, batch_size, max_samples):
        check_finite_data(x)
        seen += x.shape[0]
        out = cap(x)
        for l in names:
            a = as_samples(out[l], axis[l]).double()
            acc[l][0] += a.shape[0]
            acc[l][1] = acc[l][1] + a.sum(0)
            acc[l][2] = acc[l][2] + (a * a).sum(0)
    if seen == 0:
        raise MergeError("REPAIR: data yielded no samples")
    res = {}
    for l, (n, s, ss) in acc.items():
        mu = s / n
        res[l] = (mu, (ss / n - mu**2).clamp_min(0).sqrt())
    return res


def endpoint_stats(
    model: nn.Module,
    sds: Sequence[Mapping[str, torch.Tensor]],
    data: Any,
    plan: RepairPlan,
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per endpoint, ``{producer: (mean [C], std [C])}`` of the planned blocks."""
    layers = [(l, ax) for _, l, ax in plan.blocks]
    if not layers:
        return [{} for _ in sds]
    return [_stats(instantiate(model, sd), layers, data, batch_size, max_samples) for sd in sds]


def repair(
    model: nn.Module,
    merged: Mapping[str, torch.Tensor],
    endpoints: Sequence[Mapping[str, torch.Tensor]],
    data: Any,
    *,
    weights: Sequence[float] | None = None,
    spec: PermutationSpec | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    eps: float = 1e-5,
    stats: Sequence[Mapping[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> dict[str, torch.Tensor]:
    """REPAIR a merged model so its neuron statistics interpolate the endpoints'.

    Args:
        model: module template of the architecture (not modified).
        merged: merged state_dict (in the endpoints' aligned basis).
        endpoints: the aligned endpoint state_dicts the merge came from.
        data: inputs ``(N, ...)``, ``(x, y)`` or an iterable of batches.
        weights: interpolation weights of the endpoints (default uniform;
            ``[1 - lam, lam]`` for a point on a linear path).
        spec: the architecture's spec (default: traced from ``model`` on two
            samples of ``data``).
        eps: neurons whose merged standard deviation is below ``eps`` are
            only re-centred (no division by ~0).
        stats: precomputed :func:`endpoint_stats` (reuse along a path).

    Returns:
        new state_dict: corrected weights and biases, re-estimated BatchNorm
        statistics.
    """
    if spec is None:
        x0 = next(iter_batches(data, 2))[0][:2]
        spec = permutation_spec(model, x0)
    n = len(endpoints)
    if n < 1:
        raise MergeError("REPAIR needs the endpoint models")
    w = [1.0 / n] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise MergeError(f"REPAIR: {len(w)} weights for {n} endpoints")
    s_tot = sum(w)
    w = [v / s_tot for v in w]
    plan = repair_plan(model, spec)
    if stats is None:
        stats = endpoint_stats(model, endpoints, data, plan, batch_size=batch_size, max_samples=max_samples)
    m = instantiate(model, merged)
    has_bn = bool(_bn_modules(m))
    if has_bn:
        _reset_bn_(m, data, batch_size, max_samples)
    mods = dict(m.named_modules())
    for _, layer, ax in plan.blocks:
        mu_t = sum(wi * st[layer][0] for wi, st in zip(w, stats))
        sd_t = sum(wi * st[layer][1] for wi, st in zip(w, stats))
        mu_m, sd_m = _stats(m, [(layer, ax)], data, batch_size, max_samples)[layer]
        scale = torch.where(sd_m > eps, sd_t / sd_m.clamp_min(eps), torch.ones_like(sd_m))
        mod = mods[layer]
        with torch.no_grad():
            shape = (-1,) + (1,) * (mod.weight.dim() - 1)
            mod.weight.mul_(scale.view(shape).to(mod.weight.dtype))
            mod.bias.copy_(((mod.bias.double() - mu_m) * scale + mu_t).to(mod.bias.dtype))
        if has_bn:
            _reset_bn_(m, data, batch_size, max_samples)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}
