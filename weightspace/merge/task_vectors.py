"""Task-vector merges: TIES, DARE, model breadcrumbs, and SLERP.

A *task vector* is ``tau_i = theta_i - theta_base`` (Ilharco et al. 2023):
what fine-tuning model ``i`` changed. The methods here sparsify the task
vectors, combine them and add the result back to the base model::

    theta = theta_base + lam * combine_i(w_i * mask_i(tau_i))

All functions take state_dicts (a base model and ``N`` fine-tuned models of
the same keys and shapes) and return a new state_dict; nothing is mutated.
Floating tensors are combined in float64 and returned in the base model's
dtype; non-floating tensors follow :func:`~weightspace.merge.average.merge_non_float`.
Every method works tensor by tensor, except the paper's global TIES trim
(``trim="global"``), which ranks all entries of a task vector together.

The papers and `mergekit <https://github.com/arcee-ai/mergekit>`_ (what most
Hugging Face merges use) differ in a few places; each difference is an
option whose default is the paper's form:

============  ==========================  ===============================
option        paper (default)             mergekit
============  ==========================  ===============================
``trim``      ``"global"``: the top       ``"per_tensor"``: exactly
              ``density`` of all entries  ``k = int(density * numel)``
              of a task vector            entries per tensor, ties
              (``|tau| >= k-th largest``) broken by sort order
``sign``      ``"sum"``: sign of the sum  ``"weighted_sum"``: sign of
              of trimmed task vectors     ``sum_i w_i tau_i``
``rescale``   ``"inverse_density"``:      ``"l1"``: ``|tau|_1 /
              ``1 / density``             |tau * mask|_1`` per tensor
============  ==========================  ===============================

``normalize`` (divide the combined task vector by the weights of the models
that contribute to each entry) defaults per method as in both: ``True`` for
TIES (its disjoint mean), ``False`` for DARE and breadcrumbs.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch

from weightspace.merge._common import BLOCK, MergeConfigError, MergeError
from weightspace.merge.average import _check_same, merge_non_float, weighted_sum
from weightspace.merge.sparsify import (
    COMBINE,
    RESCALE,
    SIGN,
    TRIM,
    breadcrumbs_mask,
    check_choice,
    dare_mask,
    magnitude_mask,
    mask_,
    per_model,
    rescale_kept_,
    seed_of,
    trim_masks,
)

__all__ = [
    "breadcrumbs",
    "breadcrumbs_mask",
    "dare",
    "dare_mask",
    "layer_index",
    "magnitude_mask",
    "slerp",
    "slerp_tensor",
    "ties",
    "trim_masks",
]

StateDict = dict[str, torch.Tensor]



def _prepare(base: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
             weights: Sequence[float] | None, names: Sequence[str] | None, density: float | Sequence[float],
             lam: float, combine: str, sign: str) -> tuple[list[str], list[float], list[float]]:
    """The checks every task-vector method starts with: the state_dicts, the
    per-model ``weights`` and ``density``, ``lam``, ``combine`` and ``sign``.
    Returns ``(labels, weights, densities)``; ``labels[0]`` is the base."""
    if not finetuned:
        raise MergeError("need at least one fine-tuned state_dict")
    labels = ["base", *(names or [f"finetuned {i}" for i in range(len(finetuned))])]
    _check_same([base, *finetuned], labels)
    w = per_model(1.0 if weights is None else weights, len(finetuned), "weights", lo=None, hi=None)
    d = per_model(density, len(finetuned), "density")
    per_model(lam, 1, "lam", lo=None, hi=None)
    check_choice(combine, "combine", COMBINE)
    check_choice(sign, "sign", SIGN)
    return labels, w, d


# ------------------------------------------------------------- combining
def _combine(taus: Sequence[torch.Tensor], w: Sequence[float], combine: str, sign: str,
             normalize: bool, base: torch.Tensor, lam: float, out: torch.Tensor) -> torch.Tensor:
    """``base + lam * combine(taus)`` (float64 ``base``) written into ``out``:
    :func:`_combine_block` over chunks of the flattened entries (it is
    elementwise), each added to the base and cast into ``out`` at once, so
    the working copies stay bounded for an embedding-sized tensor. Same
    result bit for bit as whole tensors."""
    flat, b, dest = [t.reshape(-1) for t in taus], base.reshape(-1), out.view(-1)
    for i in range(0, dest.numel(), _CHUNK):
        mixed = _combine_block([f[i : i + _CHUNK] for f in flat], w, combine, sign, normalize)
        dest[i : i + _CHUNK] = mixed.mul_(lam).add_(b[i : i + _CHUNK])  # = b + lam * mixed (+ commutes exactly)
    return out


_CHUNK = BLOCK  # cache-sized: every temporary of the combine stays in cache


def _combine_block(taus: Sequence[torch.Tensor], w: Sequence[float], combine: str, sign: str,
                   normalize: bool) -> torch.Tensor:
    """One tensor's combined task vector from sparsified ``taus`` (float64).

    ``combine="linear"``: ``sum_i w_i tau_i`` (``/ sum_i w_i`` if
    ``normalize``). ``combine="ties"``: elect ``s = sgn(sum_i tau_i)``
    (``sign="sum"``) or ``sgn(sum_i w_i tau_i)`` (``"weighted_sum"``), zero
    taken as ``+``; then ``sum_{i in A} w_i tau_i`` over the models whose
    entry has sign ``s`` (``A``), divided by ``sum_{i in A} w_i`` if
    ``normalize`` (the disjoint mean).
    """
    stack = torch.stack(list(taus))
    wt = torch.tensor(list(w), dtype=torch.float64).reshape(-1, *([1] * (stack.dim() - 1)))
    weighted = stack * wt
    if combine == "linear":
        mixed = weighted.sum(0)
        if normalize:
            div = float(sum(w))
            mixed = mixed / (div if abs(div) >= 1e-8 else 1.0)
        return mixed
    elect = (stack if sign == "sum" else weighted).sum(0)
    elected = torch.where(elect >= 0, 1.0, -1.0).to(torch.float64)
    agree = torch.sign(stack) == elected
    mixed = (weighted * agree).sum(0)
    if normalize:
        div = (wt * agree).sum(0)
        mixed = mixed / torch.where(div == 0, torch.ones_like(div), div)
    return mixed


def _apply(base: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]], labels: list[str],
           sparsify, w: Sequence[float], lam: float, combine: str, sign: str, normalize: bool) -> StateDict:
    """``base + lam * combine(sparsify(i, key, tau_i))`` tensor by tensor."""
    out: StateDict = {}
    for k, v in base.items():
        if not v.is_floating_point():
            out[k] = merge_non_float(k, [v, *(ft[k] for ft in finetuned)], labels)
            continue
        b = v.double()
        taus = [sparsify(i, k, ft[k].to(torch.float64, copy=True).sub_(b)) for i, ft in enumerate(finetuned)]
        out[k] = _combine(taus, w, combine, sign, normalize, b, lam, torch.empty(tuple(v.shape), dtype=v.dtype))
        del taus
    return out


# ---------------------------------------------------------------- methods
def ties(
    base: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    density: float | Sequence[float] = 0.2,
    lam: float = 1.0,
    trim: str = "global",
    sign: str = "sum",
    normalize: bool = True,
    names: Sequence[str] | None = None,
) -> StateDict:
    """TIES-merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference
    When Merging Models"): trim, elect sign, disjoint merge.

    ``tau_i = theta_i - theta_base``; trim ``tau^_i = tau_i * m_i`` keeping the
    top ``density`` magnitudes; elect ``s = sgn(sum_i tau^_i)``; disjoint mean
    ``tau_m = sum_{i in A} w_i tau^_i / sum_{i in A} w_i`` with ``A = {i :
    sgn(tau^_i) = s}`` elementwise; ``theta = theta_base + lam * tau_m``.
    With the defaults (uniform weights, ``trim="global"``, ``sign="sum"``,
    ``normalize=True``) this is the paper; mergekit's ``ties`` is
    ``trim="per_tensor", sign="weighted_sum"`` with its per-model weights.

    Args:
        base: the pre-trained state_dict.
        finetuned: ``N`` fine-tuned state_dicts (same keys and shapes).
        weights: ``N`` per-model weights ``w_i`` (default 1).
        density: fraction of each task vector kept (one, or one per model), in ``[0, 1]``.
        lam: scale ``lambda`` of the merged task vector.
        trim: ``"global"`` (paper) or ``"per_tensor"`` (mergekit); see :func:`trim_masks`.
        sign: ``"sum"`` (paper) or ``"weighted_sum"`` (mergekit).
        normalize: divide by the agreeing models' weights (the disjoint mean);
            ``False`` sums them.
        names: labels of the fine-tuned models for error messages.

    Returns:
        new state_dict (floating tensors in ``base``'s dtypes).
    """
    labels, w, d = _prepare(base, finetuned, weights, names, density, lam, "ties", sign)
    check_choice(trim, "trim", TRIM)
    fkeys = [k for k, v in base.items() if v.is_floating_point()]
    if trim == "global":
        masks = [trim_masks({k: ft[k].double() - base[k].double() for k in fkeys}, d[i], "global")
                 for i, ft in enumerate(finetuned)]
        sparsify = lambda i, k, tau: mask_(tau, masks[i][k])  # noqa: E731  (tau is _apply's own)
    else:
        sparsify = lambda i, k, tau: mask_(tau, magnitude_mask(tau, d[i]))  # noqa: E731  (tau is _apply's own)
    return _apply(base, finetuned, labels, sparsify, w, float(lam), "ties", sign, normalize)


def dare(
    base: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    density: float | Sequence[float] = 0.1,
    lam: float = 1.0,
    rescale: str = "inverse_density",
    combine: str = "linear",
    sign: str = "sum",
    normalize: bool = False,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> StateDict:
    """DARE, drop and rescale (Yu et al. 2024, "Language Models are Super
    Mario: Absorbing Abilities from Homologous Models as a Free Lunch").

    Each entry of ``tau_i`` is dropped with probability ``p = 1 - density``
    (``m_i ~ Bernoulli(density)``) and the rest rescaled:
    ``tau~_i = m_i * tau_i / (1 - p)`` (``rescale="inverse_density"``, the
    paper) or ``m_i * tau_i * |tau_i|_1 / |m_i * tau_i|_1`` per tensor
    (``"l1"``, mergekit); ``"none"`` keeps ``m_i * tau_i``. Then
    ``combine="linear"``: ``theta = theta_base + lam * sum_i w_i tau~_i``
    (mergekit ``dare_linear``), or ``"ties"``: TIES' sign election and
    disjoint merge on ``tau~_i`` (``dare_ties``; see :func:`ties`).

    The mask of model ``i`` and tensor ``key`` comes from a
    ``torch.Generator`` seeded with a hash of ``(seed, i, key)``: the same
    seed gives the same merge, in any tensor order.

    Args:
        density: keep probability ``1 - p`` (one, or one per model), in ``[0, 1]``.
        lam: scale of the merged task vector.
        rescale: ``"inverse_density"`` (paper), ``"l1"`` (mergekit) or ``"none"``.
        combine: ``"linear"`` or ``"ties"``.
        sign: sign election with ``combine="ties"``: ``"sum"`` or ``"weighted_sum"``.
        normalize: divide by the (agreeing) models' weights.
        seed: seed of the drop masks.
        base, finetuned, weights, names: as in :func:`ties`.
    """
    labels, w, d = _prepare(base, finetuned, weights, names, density, lam, combine, sign)
    check_choice(rescale, "rescale", RESCALE)

    def sparsify(i: int, k: str, tau: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed_of(seed, i, k))
        return rescale_kept_(tau, dare_mask(tau.shape, d[i], gen), d[i], rescale)  # tau is _apply's own

    return _apply(base, finetuned, labels, sparsify, w, float(lam), combine, sign, normalize)


def breadcrumbs(
    base: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    density: float | Sequence[float] = 0.1,
    beta: float = 0.01,
    lam: float = 1.0,
    combine: str = "linear",
    sign: str = "sum",
    normalize: bool = False,
    names: Sequence[str] | None = None,
) -> StateDict:
    """Model breadcrumbs (Davari & Belilovsky 2024, "Model Breadcrumbs:
    Scaling Multi-Task Model Merging with Sparse Masks").

    Per tensor, mask the largest-magnitude fraction ``beta`` of ``tau_i``
    (outliers) and the smallest ones, so that a fraction ``density``
    remains (:func:`breadcrumbs_mask`); ``theta = theta_base + lam * sum_i
    w_i m_i tau_i`` (``combine="linear"``, the paper and mergekit
    ``breadcrumbs``) or TIES' sign election and disjoint merge
    (``"ties"``, mergekit ``breadcrumbs_ties``).

    Args:
        density: fraction kept (one, or one per model), in ``[0, 1]``.
        beta: fraction of largest magnitudes masked, in ``[0, 1]``.
        lam, combine, sign, normalize: as in :func:`dare`.
        base, finetuned, weights, names: as in :func:`ties`.
    """
    labels, w, d = _prepare(base, finetuned, weights, names, density, lam, combine, sign)
    beta = per_model(beta, 1, "beta")[0]
    sparsify = lambda i, k, tau: mask_(tau, breadcrumbs_mask(tau, d[i], beta))  # noqa: E731  (tau is _apply's own)
    return _apply(base, finetuned, labels, sparsify, w, float(lam), combine, sign, normalize)


# ------------------------------------------------------------------ SLERP
_LAYER = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")


def layer_index(name: str) -> int | None:
    """The layer index of a tensor name: its first all-digit component
    (``model.layers.3.mlp.weight`` -> 3, ``layers.0.weight`` -> 0), else ``None``."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def _t_at(anchors: Sequence[float], pos: float) -> float:
    """Piecewise-linear value of ``anchors`` (evenly spaced on [0, 1]) at ``pos``."""
    if len(anchors) == 1:
        return float(anchors[0])
    x = pos * (len(anchors) - 1)
    i0 = min(int(math.floor(x)), len(anchors) - 2)
    frac = x - i0
    return (1 - frac) * float(anchors[i0]) + frac * float(anchors[i0 + 1])


#: entries per partial sum of :func:`slerp_tensor`'s norms and dot product.
#: Unlike the elementwise blocks (:data:`~weightspace.merge._common.BLOCK`)
#: it is part of the result (the float64 rounding of the sums): keep it fixed
DOT_BLOCK = 1 << 17


def slerp_tensor(t: float, a: torch.Tensor, b: torch.Tensor, *, dot_threshold: float = 0.9995,
                 eps: float = 1e-8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Spherical linear interpolation of two tensors, flattened (Shoemake
    1985, as mergekit applies it to weights)::

        cos Omega = <a/|a|, b/|b|>,
        slerp(t) = sin((1-t) Omega) / sin Omega * a + sin(t Omega) / sin Omega * b

    Falls back to ``(1-t) a + t b`` when ``|cos Omega| > dot_threshold``
    (nearly parallel). A tensor with norm ``<= eps`` is not normalised, so
    ``cos Omega ~ 0``: it is treated as orthogonal to the other
    (``Omega = pi/2``).

    Everything is computed in float64, in one pass over cache-sized blocks
    of :data:`DOT_BLOCK` entries: each block's ``<a, a>``, ``<b, b>`` and
    ``<a, b>`` are added up in order, then ``cos Omega = <a, b> / (|a|
    |b|)``; the interpolation is :func:`~weightspace.merge.average.weighted_sum`.
    No whole-tensor copy.

    Args:
        dtype: the result's dtype (float64 by default; the merge casts to the model's).

    Returns:
        ``a``'s shape, ``dtype``.
    """
    fa, fb = a.reshape(-1), b.reshape(-1)
    n = fa.numel()
    ua, ub = (torch.empty(min(DOT_BLOCK, n), dtype=torch.float64) for _ in range(2))
    aa = bb = ab = 0.0
    for s in range(0, n, DOT_BLOCK):
        e = min(s + DOT_BLOCK, n)
        x, y = ua[: e - s].copy_(fa[s:e]), ub[: e - s].copy_(fb[s:e])
        aa, bb, ab = aa + float(torch.dot(x, x)), bb + float(torch.dot(y, y)), ab + float(torch.dot(x, y))
    del ua, ub
    na, nb = math.sqrt(aa), math.sqrt(bb)
    dot = ab / ((na if na > eps else 1.0) * (nb if nb > eps else 1.0))
    if abs(dot) > dot_threshold:
        return weighted_sum([a, b], [1 - t, t], dtype)
    omega = math.acos(max(-1.0, min(1.0, dot)))
    sn = math.sin(omega)
    return weighted_sum([a, b], [math.sin((1 - t) * omega) / sn, math.sin(t * omega) / sn], dtype)


def slerp(
    sd_a: Mapping[str, torch.Tensor],
    sd_b: Mapping[str, torch.Tensor],
    t: float | Sequence[float] = 0.5,
    *,
    t_default: float | None = None,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
    n_layers: int | None = None,
    names: Sequence[str] | None = None,
) -> StateDict:
    """SLERP of two models, tensor by tensor (:func:`slerp_tensor`);
    ``t = 0`` gives ``sd_a``, ``t = 1`` gives ``sd_b``.

    ``t`` is one value or a schedule across layers like mergekit's
    gradients: anchors spread evenly over the layers, the value of layer
    ``l`` of ``L`` (``l`` from :func:`layer_index`, ``L`` = the largest index
    in the state_dict + 1) interpolated linearly at ``l / (L - 1)``.
    Tensors without a layer index (embeddings, final norm, head) take
    ``t_default`` (default: the mean of the anchors).

    Args:
        sd_a, sd_b: state_dicts of the same keys and shapes.
        t: a value in ``[0, 1]`` or a list of anchors in ``[0, 1]``.
        t_default: ``t`` of tensors without a layer index.
        dot_threshold: ``|cos|`` above which to interpolate linearly.
        eps: norms at or below are near-zero (treated as orthogonal).
        n_layers: ``L`` (default: from the names in ``sd_a``; give it when
            merging a part of a model, as the streaming merge does).
        names: labels of the two models for error messages.
    """
    labels = list(names) if names else ["model a", "model b"]
    _check_same([sd_a, sd_b], labels)
    anchors = per_model(t, 1, "t")[0:1] if isinstance(t, (int, float)) else list(t)
    if not anchors:
        raise MergeConfigError("needs at least one anchor value", field="t")
    anchors = per_model(anchors, len(anchors), "t")
    td = sum(anchors) / len(anchors) if t_default is None else per_model(t_default, 1, "t_default")[0]
    per_model(dot_threshold, 1, "dot_threshold")
    idx = [i for i in (layer_index(k) for k in sd_a) if i is not None]
    if n_layers is None:
        n_layers = max(idx) + 1 if idx else 1
    out: StateDict = {}
    for k, v in sd_a.items():
        if not v.is_floating_point():
            out[k] = merge_non_float(k, [v, sd_b[k]], labels)
            continue
        li = layer_index(k)
        tk = td if li is None else _t_at(anchors, li / (n_layers - 1) if n_layers > 1 else 0.0)
        out[k] = slerp_tensor(tk, v, sd_b[k], dot_threshold=dot_threshold, eps=eps, dtype=v.dtype)
    return out
