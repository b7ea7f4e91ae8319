"""The averaging family: plain, weighted, Fisher-weighted (Matena & Raffel
2022), task arithmetic (Ilharco et al. 2023) and linear interpolation.
TIES, DARE, breadcrumbs and SLERP are :mod:`weightspace.merge.task_vectors`.

All functions take state_dicts with identical keys and shapes and return a
new state_dict. Non-floating entries follow one rule
(:func:`merge_non_float`): identical ones are
copied, ``num_batches_tracked`` takes the maximum, any other that differs
between the models is a :class:`MergeError` naming it. Averaging permutation-misaligned models is rarely
useful: align them first (:mod:`weightspace.merge.matching`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from weightspace.errors import NonFiniteWeightsError, StateDictError
from weightspace.graph import all_finite
from weightspace.merge._common import (
    BLOCK,
    MergeError,
    check_finite_data,
    instantiate,
    iter_batches,
    model_label,
)
from weightspace.merge.sparsify import per_model, trim_masks

__all__ = [
    "average",
    "diagonal_fisher",
    "fisher_average",
    "interpolate",
    "merge_non_float",
    "task_arithmetic",
]


def merge_non_float(
    key: str, values: Sequence[torch.Tensor], names: Sequence[str] | None = None
) -> torch.Tensor:
    """The merged value of a non-floating tensor (integer or bool buffer).

    Every function that combines state_dicts (:func:`~weightspace.merge.average`
    and with it every matcher's final average, ``interpolate``,
    ``task_arithmetic``) applies this one rule:

    - identical in every model: copied;
    - ``*.num_batches_tracked`` (BatchNorm's batch counter; it only matters
      with ``momentum=None``): the maximum over the models. ``reset_bn_stats``
      and ``repair`` reset it and count the re-estimation batches instead;
    - any other tensor that differs: :class:`MergeError` naming the tensor,
      because no average of counters, indices or masks is right in general.

    Args:
        key: the tensor's state_dict name (named in errors).
        values: one tensor per model, all of the same shape and dtype.
        names: labels of the models for error messages.
    """
    first = values[0]
    for i, v in enumerate(values[1:], start=1):
        if v.dtype != first.dtype:
            raise MergeError(
                f"tensor {key!r}: {model_label(i, names)} has dtype {v.dtype}, "
                f"{model_label(0, names)} has {first.dtype}"
            )
    if all(torch.equal(v, first) for v in values[1:]):
        return first.clone()
    if key == "num_batches_tracked" or key.endswith(".num_batches_tracked"):
        return torch.stack(list(values)).amax(0)
    i = next(i for i, v in enumerate(values) if not torch.equal(v, first))
    raise MergeError(
        f"non-floating tensor {key!r} differs between {model_label(0, names)} and {model_label(i, names)}; "
        "integer/bool buffers cannot be averaged: make them equal (or drop them) before merging"
    )


def _check_same(sds: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None, *,
                finite: bool = True) -> None:
    """Same keys and shapes in every model, and (``finite``) no NaN/Inf in a
    floating tensor: :class:`~weightspace.errors.WeightspaceError` naming the
    model and tensor. ``finite=False`` leaves that to :func:`_check_output`."""
    if not sds:
        raise MergeError("need at least one state_dict")
    ref = sds[0]
    for i, sd in enumerate(sds[1:], start=1):
        if set(sd) != set(ref):
            missing = sorted(set(ref) - set(sd))[:6]
            extra = sorted(set(sd) - set(ref))[:6]
            raise StateDictError(
                f"{model_label(i, names)} has different keys than {model_label(0, names)} "
                f"(missing {missing}, unexpected {extra}): are they the same architecture?"
            )
        for k, v in sd.items():
            if tuple(v.shape) != tuple(ref[k].shape):
                raise StateDictError(
                    f"tensor {k!r}: {model_label(i, names)} has shape {tuple(v.shape)}, "
                    f"{model_label(0, names)} has {tuple(ref[k].shape)}: different widths? "
                    "Use ot_fusion for models of different widths"
                )
    if finite:
        _check_finite(sds, names)


def _check_finite(sds: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None) -> None:
    for i, sd in enumerate(sds):
        for k, v in sd.items():
            if v.is_floating_point() and not all_finite(v):
                raise NonFiniteWeightsError(f"{model_label(i, names)}: tensor {k!r} has NaN/Inf values")


def _check_output(out: torch.Tensor, sds: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None,
                  state: list[bool]) -> None:
    """The finite check of merges whose every output entry is a finite-weighted
    sum over all inputs' entries (NaN/Inf in an input makes the output's entry
    NaN/Inf, ``0 * Inf`` included): one pass over the output instead of one
    per input; only a non-finite output (bad input, or an overflow) checks the
    inputs, once (``state[0]``), raising what :func:`_check_same` would."""
    if not state[0] and not all_finite(out):
        _check_finite(sds, names)
        state[0] = True


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    """``sum_i weights[i] * tensors[i]`` computed in float64 (left to right), returned in ``dtype``.

    Works through the flattened entries in blocks of :data:`BLOCK` with two
    reused float64 buffers: the sum is elementwise, so the result is bit
    for bit that of whole float64 copies, without them (one output tensor,
    two cache-sized blocks).
    """
    res = torch.empty(tuple(tensors[0].shape), dtype=dtype)
    flat, dest = [t.reshape(-1) for t in tensors], res.view(-1)
    n = dest.numel()
    w = [float(x) for x in weights]
    acc = torch.empty(min(BLOCK, n), dtype=torch.float64)
    tmp = torch.empty(min(BLOCK, n) if len(flat) > 1 else 0, dtype=torch.float64)
    for s in range(0, n, BLOCK):
        e = min(s + BLOCK, n)
        a = acc[: e - s].copy_(flat[0][s:e]).mul_(w[0])
        for wi, f in zip(w[1:], flat[1:]):
            a.add_(tmp[: e - s].copy_(f[s:e]).mul_(wi))
        dest[s:e] = a
    return res


def average(
    sds: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """(Weighted) average ``sum_i w_i * sd_i`` with ``w`` normalised to sum 1.

    Args:
        sds: ``N`` state_dicts of the same shapes.
        weights: ``N`` non-negative weights (default uniform).
        names: labels of the models for error messages.

    Returns:
        new state_dict (floating tensors in the first model's dtype).
    """
    _check_same(sds, names, finite=False)
    n = len(sds)
    w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape != (n,) or (w < 0).any() or not torch.isfinite(w).all() or float(w.sum()) <= 0:
        raise MergeError(f"weights must be {n} finite non-negative numbers with a positive sum, got {list(weights or [])}")
    w = w / w.sum()
    out, checked = {}, [False]
    for k, v in sds[0].items():
        if v.is_floating_point():
            out[k] = weighted_sum([sd[k] for sd in sds], w.tolist(), v.dtype)
            _check_output(out[k], sds, names, checked)
        else:
            out[k] = merge_non_float(k, [sd[k] for sd in sds], names)
    return out


def interpolate(
    sd_a: Mapping[str, torch.Tensor], sd_b: Mapping[str, torch.Tensor], lam: float
) -> dict[str, torch.Tensor]:
    """``(1 - lam) * a + lam * b`` (``lam`` may lie outside [0, 1])."""
    _check_same([sd_a, sd_b])
    out = {}
    for k, v in sd_a.items():
        if v.is_floating_point():
            out[k] = weighted_sum([v, sd_b[k]], [1 - lam, lam], v.dtype)
        else:
            out[k] = merge_non_float(k, [v, sd_b[k]])
    return out


def task_arithmetic(
    base: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    scale: float | Sequence[float] = 1.0,
    *,
    density: float | Sequence[float] = 1.0,
    trim: str = "global",
) -> dict[str, torch.Tensor]:
    """``base + sum_i scale_i * m_i * (finetuned_i - base)`` (task vectors;
    Ilharco et al. 2023, "Editing Models with Task Arithmetic").

    Args:
        base: the pre-trained state_dict every fine-tuned model started from.
        finetuned: ``N`` fine-tuned state_dicts (same shapes as ``base``).
        scale: one scaling coefficient, or one per task (per-model weights).
        density: fraction of each task vector kept by magnitude (one, or one
            per task, in ``[0, 1]``); ``1`` (default) keeps everything, so
            ``m_i = 1``. The mask ``m_i`` is TIES' trim
            (:func:`~weightspace.merge.sparsify.trim_masks`).
        trim: ``"global"`` (top ``density`` of the whole task vector) or
            ``"per_tensor"`` (exactly ``int(density * numel)`` per tensor, as
            mergekit does).
    """
    labels = ["base"] + [f"finetuned {i}" for i in range(len(finetuned))]
    n = len(finetuned)
    d = per_model(density, n, "density")
    dense = all(di == 1 for di in d)  # no trim: the output check finds NaN/Inf inputs
    _check_same([base, *finetuned], labels, finite=not dense)
    s = [float(scale)] * n if isinstance(scale, (int, float)) else [float(x) for x in scale]
    if len(s) != n:
        raise MergeError(f"scale has {len(s)} entries for {n} fine-tuned models")
    if trim not in ("global", "per_tensor"):
        trim_masks({}, 1.0, trim)  # raises the one error for a bad trim
    fkeys = [k for k, v in base.items() if v.is_floating_point()]
    masks = [
        trim_masks({k: ft[k].double() - base[k].double() for k in fkeys}, di, trim) if di < 1 else None
        for di, ft in zip(d, finetuned)
    ]
    out, checked = {}, [not dense]
    for k, v in base.items():
        if v.is_floating_point():
            out[k] = _task_sum(v, [ft[k] for ft in finetuned], s, [None if mi is None else mi[k] for mi in masks])
            _check_output(out[k], [base, *finetuned], labels, checked)
        else:
            out[k] = merge_non_float(k, [v] + [ft[k] for ft in finetuned], labels)
    return out


def _task_sum(base: torch.Tensor, fts: Sequence[torch.Tensor], scales: Sequence[float],
              masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """``base + sum_i scales[i] * masks[i] * (fts[i] - base)`` in float64, in
    blocks of :data:`BLOCK` with reused buffers (elementwise: bit for bit the
    whole-tensor form)."""
    res = torch.empty(tuple(base.shape), dtype=base.dtype)
    b, dest = base.reshape(-1), res.view(-1)
    flat = [f.reshape(-1) for f in fts]
    ms = [None if m is None else m.reshape(-1) for m in masks]
    n = dest.numel()
    b64, acc, tau = (torch.empty(min(BLOCK, n), dtype=torch.float64) for _ in range(3))
    for s in range(0, n, BLOCK):
        e = min(s + BLOCK, n)
        bb = b64[: e - s].copy_(b[s:e])
        a = acc[: e - s].copy_(bb)
        for si, f, m in zip(scales, flat, ms):
            t = tau[: e - s].copy_(f[s:e]).sub_(bb)
            if m is not None:
                t.mul_(m[s:e])
            a.add_(t.mul_(si))
        dest[s:e] = a
    return res


def diagonal_fisher(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    data: Any,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
    labels: str = "sampled",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Diagonal empirical/true Fisher information of a classifier.

    ``F = E_x E_{y ~ p(y|x)} [(d log p(y|x) / d theta)^2]``, estimated per
    example (Matena & Raffel 2022).

    Args:
        model: module template (not modified).
        sd: the weights to evaluate the Fisher at.
        data: ``x (N, ...)``, ``(x, y)`` or an iterable of batches.
        labels: ``"sampled"`` (y drawn from the model, the true Fisher; needs
            ``seed``), ``"argmax"`` or ``"given"`` (the data's labels: the
            empirical Fisher).
        max_samples: use at most this many examples.

    Returns:
        ``{parameter name: Fisher diagonal of the same shape}`` (float32),
        only for trainable parameters (buffers get no Fisher).
    """
    from torch.func import functional_call, grad, vmap

    if labels not in ("sampled", "argmax", "given"):
        raise MergeError(f"labels must be 'sampled', 'argmax' or 'given', got {labels!r}")
    m = instantiate(model, sd).eval()
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = {k: v.detach() for k, v in m.named_buffers()}
    gen = torch.Generator().manual_seed(int(seed))

    def logp(p, x, y):
        out = functional_call(m, (p, buffers), (x.unsqueeze(0),))
        return torch.log_softmax(out, -1)[0].gather(0, y.reshape(1)).squeeze(0)

    per_example = vmap(grad(logp), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
    seen = 0
    for x, y in iter_batches(data, batch_size, max_samples):
        check_finite_data(x)
        with torch.no_grad():
            logits = m(x)
        if labels == "given":
            if y is None:
                raise MergeError("labels='given' needs (x, y) data")
            yy = y.long()
        elif labels == "argmax":
            yy = logits.argmax(-1)
        else:
            yy = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=gen).squeeze(1)
        g = per_example(params, x, yy)
        for k in fisher:
            fisher[k] += g[k].pow(2).sum(0).float()
        seen += x.shape[0]
    if seen == 0:
        raise MergeError("diagonal_fisher: data yielded no samples")
    return {k: v / seen for k, v in fisher.items()}


def fisher_average(
    sds: Sequence[Mapping[str, torch.Tensor]],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    eps: float = 1e-8,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Fisher-weighted average ``sum_i w_i F_i theta_i / sum_i w_i F_i``
    elementwise (Matena & Raffel 2022).

    Args:
        sds: ``N`` state_dicts (aligned first when they are independent runs).
        fishers: per model, ``{name: Fisher diagonal}`` from
            :func:`diagonal_fisher`; entries without a Fisher (buffers such as
            BatchNorm statistics) are plainly averaged.
        weights: per-model scalar weights (default uniform).
        eps: added to every Fisher so that zero-information entries fall back
            to the plain average.
    """
    _check_same(sds, names)
    n = len(sds)
    if len(fishers) != n:
        raise MergeError(f"got {len(fishers)} Fisher dicts for {n} models")
    w = [1.0 / n] * n if weights is None else [float(x) for x in weights]
    plain = average(sds, w, names=names)
    out = {}
    for k, v in sds[0].items():
        if not v.is_floating_point() or not all(k in f for f in fishers):
            out[k] = plain[k]
            continue
        num = torch.zeros_like(v, dtype=torch.float64)
        den = torch.zeros_like(v, dtype=torch.float64)
        for i in range(n):
            f = fishers[i][k].double()
            if f.shape != v.shape or (f < 0).any() or not torch.isfinite(f).all():
                raise MergeError(f"Fisher of {model_label(i, names)} for {k!r} must be finite, >= 0 and shaped {tuple(v.shape)}")
            fw = w[i] * (f + eps)
            num += fw * sds[i][k].double()
            den += fw
        out[k] = (num / den).to(v.dtype)
    return out

