"""Sparsification masks of task vectors (TIES trim, DARE drop, breadcrumbs)
and the option checks the task-vector methods share; see
:mod:`weightspace.merge.task_vectors` for the methods and the papers."""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

import torch

from weightspace.merge._common import BLOCK, MergeConfigError

__all__ = ["breadcrumbs_mask", "dare_mask", "magnitude_mask", "trim_masks"]

TRIM = ("global", "per_tensor")
SIGN = ("sum", "weighted_sum")
RESCALE = ("inverse_density", "l1", "none")
COMBINE = ("linear", "ties")


# ------------------------------------------------------------- checking
def check_choice(value: str, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise MergeConfigError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}", field=name)


def per_model(value: float | Sequence[float], n: int, name: str, lo: float | None = 0.0,
               hi: float | None = 1.0) -> list[float]:
    """``value`` as ``n`` floats (one value is repeated), each in ``[lo, hi]``."""
    vals = [value] * n if isinstance(value, (int, float)) else list(value)
    if len(vals) != n:
        raise MergeConfigError(f"has {len(vals)} entries for {n} fine-tuned models", field=name)
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MergeConfigError(f"expected finite numbers, got {v!r}", field=name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise MergeConfigError(f"must lie in [{lo}, {hi}], got {v}", field=name)
        out.append(float(v))
    return out


# ---------------------------------------------------------------- masks
def magnitude_mask(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Per-tensor magnitude trim (mergekit's TIES): ``True`` at exactly
    ``k = int(density * tau.numel())`` entries of largest ``|tau|``; among
    equal magnitudes the earlier (flattened) index wins (stable sort).

    Args:
        tau: any shape.
        density: fraction kept, in ``[0, 1]``.

    Returns:
        bool mask, ``tau``'s shape.
    """
    flat = tau.reshape(-1)
    n = flat.numel()
    k = int(density * n)
    if k <= 0 or k >= n:
        return torch.full(tau.shape, k > 0, dtype=torch.bool)
    # the k-th largest magnitude: numpy's introselect in place on our own
    # |tau| (no index array, unlike kthvalue); then, block by block, the
    # entries above it and the earliest entries equal to it: what a stable
    # descending sort keeps
    mag = flat.abs() if flat.dtype in (torch.float32, torch.float64) else flat.abs().double()  # exact
    mag.numpy().partition(n - k)
    thr = float(mag[n - k])
    del mag
    mask = torch.empty(n, dtype=torch.bool)
    above, equal, n_equal = 0, [], 0
    for s in range(0, n, BLOCK):
        a = flat[s : s + BLOCK].abs()
        above += int(torch.gt(a, thr, out=mask[s : s + BLOCK]).sum())
        if n_equal < k - above:  # the earliest ties that may still be needed
            idx = torch.eq(a, thr).nonzero().squeeze(1)[: k - above - n_equal] + s
            equal.append(idx)
            n_equal += idx.numel()
    if equal:
        mask[torch.cat(equal)[: k - above]] = True
    return mask.reshape(tau.shape)


def trim_masks(taus: Mapping[str, torch.Tensor], density: float, trim: str = "global") -> dict[str, torch.Tensor]:
    """TIES trim masks of one task vector (``{name: tau}``, floating tensors).

    ``trim="global"`` (Yadav et al. 2023): keep every entry whose ``|tau|`` is
    at least the ``k``-th largest magnitude over *all* tensors, ``k =
    int(density * total entries)`` (ties at the threshold are all kept).
    ``trim="per_tensor"`` (mergekit): :func:`magnitude_mask` per tensor.
    """
    check_choice(trim, "trim", TRIM)
    if trim == "per_tensor":
        return {k: magnitude_mask(t, density) for k, t in taus.items()}
    total = sum(t.numel() for t in taus.values())
    k = int(density * total)
    if k == 0:
        return {name: torch.zeros(t.shape, dtype=torch.bool) for name, t in taus.items()}
    allabs = torch.cat([t.reshape(-1).abs().double() for t in taus.values()])
    thresh = torch.kthvalue(allabs, total - k + 1).values
    return {name: t.abs().double() >= thresh for name, t in taus.items()}


def breadcrumbs_mask(tau: torch.Tensor, density: float, beta: float) -> torch.Tensor:
    """Model breadcrumbs mask (Davari & Belilovsky 2024), per tensor: sort
    ``|tau|`` descending, drop the top ``n_top = int(beta * numel)`` outliers
    and keep the next ``k = int(density * numel)`` entries, so the smallest
    ``numel - n_top - k`` are dropped too. When ``n_top + k > numel`` the
    ``k`` smallest are kept. Ties are broken by flattened index (stable sort).

    Returns:
        bool mask, ``tau``'s shape.
    """
    flat = tau.reshape(-1).abs()
    n = flat.numel()
    k, n_top = int(density * n), int(beta * n)
    n_top = min(n_top, n - k)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.argsort(flat, descending=True, stable=True)[n_top:n_top + k]] = True
    return mask.reshape(tau.shape)


def seed_of(seed: int, model: int, key: str) -> int:
    """A stable per-(model, tensor) seed, independent of the order tensors are visited."""
    h = hashlib.sha256(f"{int(seed)}:{model}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def dare_mask(shape: Sequence[int], density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's random keep mask: each entry kept independently with
    probability ``density`` (dropped with ``p = 1 - density``).

    Args:
        shape: the tensor's shape.
        generator: the randomness (seed it for a reproducible mask).
    """
    n = math.prod(shape)
    mask = torch.empty(n, dtype=torch.bool)
    # the uniforms are drawn one by one from the generator, so drawing them
    # block by block into one cache-sized buffer gives the same mask as one
    # full-size float64 tensor, without it
    u = torch.empty(min(BLOCK, n), dtype=torch.float64)
    for s in range(0, n, BLOCK):
        e = min(s + BLOCK, n)
        torch.lt(torch.rand(e - s, generator=generator, dtype=torch.float64, out=u[: e - s]), density,
                 out=mask[s:e])
    return mask.reshape(tuple(shape))


def mask_(tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``tau *= mask`` in place (``mask``: bool, ``tau``'s shape), block by
    block: a whole ``tau.mul_(mask)`` first converts the mask to ``tau``'s
    dtype as one full-size temporary; here each conversion is one
    cache-sized block. Same values bit for bit."""
    if not tau.is_contiguous() or mask.shape != tau.shape:  # strided or broadcast: the plain product
        return tau.mul_(mask)
    t, m = tau.view(-1), mask.reshape(-1)
    for s in range(0, t.numel(), BLOCK):
        t[s : s + BLOCK].mul_(m[s : s + BLOCK])
    return tau


def rescale_kept(tau: torch.Tensor, mask: torch.Tensor, density: float, rescale: str) -> torch.Tensor:
    """DARE's kept entries ``mask * tau``, rescaled: ``/ density``
    (``"inverse_density"``), ``* |tau|_1 / |mask * tau|_1`` (``"l1"``) or not
    (``"none"``). A new tensor; :func:`rescale_kept_` overwrites ``tau``."""
    return rescale_kept_(tau.clone(), mask, density, rescale)


def rescale_kept_(tau: torch.Tensor, mask: torch.Tensor, density: float, rescale: str) -> torch.Tensor:
    """:func:`rescale_kept` in place (``tau`` becomes the result, no copy)."""
    if rescale == "l1":  # the 1-norms in one pass each, no |tau| temporary
        full = float(torch.linalg.vector_norm(tau, 1))
        kept = mask_(tau, mask)
        part = float(torch.linalg.vector_norm(kept, 1))
        return kept.mul_(full / part) if full >= 1e-8 and part >= 1e-8 else kept
    kept = mask_(tau, mask)
    if rescale == "inverse_density":
        return kept.div_(density) if density > 0 else kept
    return kept
