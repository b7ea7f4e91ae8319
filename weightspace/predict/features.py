"""Per-tensor weight-statistics features (Unterthiner et al., 2020).

For every floating-point tensor of a network (state_dict order) the features
are

* ``mean``, ``var`` (population variance), the quantiles ``q0``, ``q25``,
  ``q50``, ``q75``, ``q100`` -- the set of "Predicting Neural Network
  Accuracy from Weights" (the first seven are
  :func:`weightspace.nn.weight_statistics`, which :class:`~weightspace.nn.StatNN` reads:
  both come from :func:`weightspace.common.tensor_stats.tensor_statistics`);
* ``l1`` (sum of absolute values) and ``l2`` (Euclidean / Frobenius norm);
* optionally (``spectral=True``), for tensors with two or more axes, the
  singular values of the tensor reshaped to ``[shape[0], -1]``:
  ``sv_max``, ``sv_min``, ``sv_mean``, ``stable_rank`` (``sum s^2 / s_max^2``)
  and ``eff_rank`` (``exp`` of the entropy of ``s / sum s``).

Why this is invariant to every permutation of a
:class:`~weightspace.symmetry.PermutationSpec` by construction: a spec
permutation only reorders entries *inside* tensors (along neuron axes); it
never moves a value from one tensor to another. Every statistic above is a
symmetric function of one tensor's entries, and the singular values of
``W.reshape(shape[0], -1)`` are unchanged by permuting its rows (axis 0) or
its columns (any permutation of the other axes is a column permutation).

Non-finite weights give NaN features (for that tensor) rather than an error:
the gradient-boosting predictor handles NaN natively and the linear one
imputes it; :func:`~weightspace.predict.zoo_dataset` drops diverged networks
by default.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from weightspace.common.tensor_stats import STATS, tensor_statistics
from weightspace.graph import ParameterGraph

__all__ = [
    "STATS",
    "SPECTRAL_STATS",
    "TensorLayout",
    "network_layout",
    "network_tensors",
    "tensor_statistics",
    "spectral_statistics",
    "feature_names",
    "weight_features",
    "layout_difference",
    "layout_signature",
]

#: extra per-tensor statistics with ``spectral=True`` (tensors with >= 2 axes)
SPECTRAL_STATS = ("sv_max", "sv_min", "sv_mean", "stable_rank", "eff_rank")

#: An architecture as the features see it: ``((tensor name, shape), ...)`` of
#: the floating-point tensors in state_dict order. (Was ``Layout``, a name
#: that collided with other layouts in the package; the old name still
#: imports, with a ``DeprecationWarning``.)
TensorLayout = tuple[tuple[str, tuple[int, ...]], ...]


def __getattr__(name: str):
    if name == "Layout":
        import warnings

        warnings.warn("weightspace.predict.features.Layout is deprecated; use TensorLayout",
                      DeprecationWarning, stacklevel=2)
        return TensorLayout
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_float(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def network_layout(net: ParameterGraph | Mapping[str, torch.Tensor]) -> TensorLayout:
    """The :data:`TensorLayout` of a network (a ParameterGraph or a state_dict).

    Non-float entries (``num_batches_tracked``) are not part of it.
    """
    if isinstance(net, ParameterGraph):
        t = net.template
        return tuple((k, tuple(int(s) for s in t.shapes[k])) for k in t.keys)
    if isinstance(net, Mapping):
        bad = [k for k, v in net.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(
                f"state_dict entries must be torch tensors; {bad[:3]} are "
                f"{sorted({type(net[k]).__name__ for k in bad})}"
            )
        return tuple((k, tuple(int(s) for s in v.shape)) for k, v in net.items() if _is_float(v))
    raise TypeError(
        f"expected a ParameterGraph or a state_dict (mapping of name -> tensor), got {type(net).__name__}"
    )


def network_tensors(net: ParameterGraph | Mapping[str, torch.Tensor]) -> np.ndarray:
    """All floating-point values of a network, flattened and concatenated in
    layout order, as float64: ``[V]``."""
    if isinstance(net, ParameterGraph):
        return net.values.detach().to(torch.float64).cpu().numpy()
    network_layout(net)  # type checks
    parts = [v.detach().reshape(-1).to(torch.float64).cpu() for v in net.values() if _is_float(v)]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def spectral_statistics(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """:data:`SPECTRAL_STATS` of a batch of tensors of one shape (>= 2 axes).

    Args:
        values: ``[n, prod(shape)]`` flattened tensors.
        shape: the tensor shape; each tensor is read as a
            ``[shape[0], prod(shape[1:])]`` matrix.

    Returns:
        ``[n, len(SPECTRAL_STATS)]`` float64 (NaN rows for non-finite tensors).
    """
    if len(shape) < 2:
        raise ValueError(f"spectral statistics need a tensor with >= 2 axes, got shape {tuple(shape)}")
    v = np.asarray(values, dtype=np.float64)
    m = int(shape[0])
    k = int(math.prod(shape[1:]))
    out = np.full((v.shape[0], len(SPECTRAL_STATS)), np.nan)
    finite = np.isfinite(v).all(axis=1)
    if finite.any():
        s = np.linalg.svd(v[finite].reshape(-1, m, k), compute_uv=False)  # [n, min(m, k)], descending
        smax = s[:, 0]
        safe = np.where(smax > 0, smax, 1.0)
        total = s.sum(1)
        p = s / np.where(total > 0, total, 1.0)[:, None]
        ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1)
        out[finite] = np.column_stack(
            [smax, s[:, -1], s.mean(1), np.where(smax > 0, (s * s).sum(1) / safe**2, 0.0), np.exp(ent)]
        )
    return out


def feature_names(layout: TensorLayout, *, spectral: bool = False) -> list[str]:
    """Names of the columns of :func:`weight_features`: ``"<tensor>.<stat>"``."""
    names = []
    for k, shape in layout:
        names += [f"{k}.{s}" for s in STATS]
        if spectral and len(shape) >= 2:
            names += [f"{k}.{s}" for s in SPECTRAL_STATS]
    return names


def weight_features(
    networks: Sequence[ParameterGraph | Mapping[str, torch.Tensor]], *, spectral: bool = False
) -> tuple[np.ndarray, TensorLayout]:
    """Weight-statistics features of networks of one architecture.

    Args:
        networks: ``n`` ParameterGraphs and/or state_dicts with the same
            :func:`layout_signature` (tensor shapes, in order; names may
            differ, e.g. when a Dropout shifts ``nn.Sequential`` indices).
        spectral: add :data:`SPECTRAL_STATS` for tensors with >= 2 axes.

    Returns:
        ``(X, layout)``: ``X`` is ``[n, F]`` float64 with columns
        :func:`feature_names` ``(layout, spectral=spectral)``.

    Raises:
        ValueError: no networks, or networks of different layouts (the
            message names the first difference).
    """
    nets = list(networks)
    if not nets:
        raise ValueError("weight_features needs at least one network")
    layout = network_layout(nets[0])
    if not layout:
        raise ValueError("the network has no floating-point tensors")
    for i, n in enumerate(nets[1:], 1):
        other = network_layout(n)
        if layout_signature(other) != layout_signature(layout):
            raise ValueError(f"network {i} has a different architecture than network 0: {layout_difference(layout, other)}")
    flat = np.stack([network_tensors(n) for n in nets])  # [n, V]
    cols, off = [], 0
    for _, shape in layout:
        size = int(math.prod(shape))
        block = flat[:, off : off + size]
        if size == 0:
            cols.append(np.full((len(nets), len(STATS)), np.nan))
        else:
            cols.append(tensor_statistics(block))
            if spectral and len(shape) >= 2:
                cols.append(spectral_statistics(block, shape))
        off += size
    return np.concatenate(cols, axis=1), layout


def layout_signature(layout: TensorLayout) -> tuple[tuple[int, ...], ...]:
    """The shapes of a layout's tensors, in order: what the feature columns
    depend on. Two networks with equal signatures get comparable features
    (tensors are matched by position, not by name)."""
    return tuple(shape for _, shape in layout)


def layout_difference(expected: TensorLayout, got: TensorLayout) -> str:
    """A short human-readable description of how ``got`` differs from ``expected``."""
    if layout_signature(expected) == layout_signature(got) and expected != got:
        renamed = [f"{a!r} -> {b!r}" for (a, _), (b, _) in zip(expected, got) if a != b]
        return "same shapes, renamed tensors " + ", ".join(renamed[:4]) + (" ..." if len(renamed) > 4 else "")
    e, g = dict(expected), dict(got)
    missing = [k for k in e if k not in g]
    extra = [k for k in g if k not in e]
    shapes = [f"{k!r} is {g[k]}, expected {e[k]}" for k in e if k in g and g[k] != e[k]]
    parts = []
    if missing:
        parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if shapes:
        parts.append("; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else ""))
    if not parts:
        exp_sig, got_sig = layout_signature(expected), layout_signature(got)
        if len(exp_sig) != len(got_sig):
            parts.append(f"{len(got_sig)} tensors, expected {len(exp_sig)}")
        else:
            k = next(i for i, (a, b) in enumerate(zip(exp_sig, got_sig)) if a != b)
            parts.append(f"tensor #{k} ({got[k][0]!r}) has shape {got_sig[k]}, expected {exp_sig[k]} "
                         f"(tensor {expected[k][0]!r})")
    return "; ".join(parts)
