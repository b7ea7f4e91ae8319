"""The one per-tensor weight-statistics function (Unterthiner et al., 2020).

:func:`tensor_statistics` computes :data:`STATS` for a batch of tensors of
one shape; :func:`weight_statistics` applies it to every tensor of a
:class:`~weightspace.graph.ParameterGraph` (what
:class:`~weightspace.nn.StatNN` reads: the first :data:`NUM_BASIC_STATS`
columns). :func:`weightspace.predict.weight_features` builds its feature
columns from the same function, so the two never drift apart.

Every statistic is a symmetric function of one tensor's entries, so it is
invariant to every permutation of a permutation spec (which reorders entries
within tensors, never between them).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["STATS", "NUM_BASIC_STATS", "tensor_statistics", "weight_statistics"]

#: per-tensor statistics, in column order: mean, population variance, the
#: 0/25/50/75/100 % quantiles, L1 (sum of absolute values) and L2 norm
STATS = ("mean", "var", "q0", "q25", "q50", "q75", "q100", "l1", "l2")
#: the first columns of :data:`STATS` (mean, variance, five quantiles): what
#: :func:`weight_statistics` returns
NUM_BASIC_STATS = 7
_QUANTILES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def tensor_statistics(values: np.ndarray) -> np.ndarray:
    """:data:`STATS` of a batch of tensors of one shape.

    Args:
        values: ``[n, k]`` -- ``n`` tensors, each flattened to ``k`` values.

    Returns:
        ``[n, len(STATS)]`` float64; a row is NaN where its tensor has a
        non-finite value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"values must be [n, k] with k >= 1, got shape {v.shape}")
    finite = np.isfinite(v).all(axis=1)
    out = np.full((v.shape[0], len(STATS)), np.nan)
    if finite.any():
        w = v[finite]
        q = np.quantile(w, _QUANTILES, axis=1).T  # [n, 5]
        out[finite] = np.column_stack(
            [w.mean(1), w.var(1), q, np.abs(w).sum(1), np.sqrt((w * w).sum(1))]
        )
    return out


def weight_statistics(graph) -> torch.Tensor:
    """Per floating-point tensor of the network (state_dict order): mean,
    variance and the 0/25/50/75/100 % quantiles (the first
    :data:`NUM_BASIC_STATS` columns of :func:`tensor_statistics`).

    Args:
        graph: a :class:`~weightspace.graph.ParameterGraph`.

    Returns:
        ``[num_tensors, 7]`` float32 (invariant to neuron permutations; a
        row is NaN for a tensor with non-finite values).
    """
    t = graph.template
    values = graph.values.detach().to(torch.float64).cpu().numpy()
    rows = []
    for k in t.keys:
        n = int(np.prod(t.shapes[k], dtype=np.int64))
        rows.append(tensor_statistics(values[None, t.offsets[k] : t.offsets[k] + n])[0, :NUM_BASIC_STATS])
    if not rows:
        return torch.zeros(0, NUM_BASIC_STATS)
    return torch.from_numpy(np.stack(rows)).to(torch.float32)
