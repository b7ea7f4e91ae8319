r"""Relative representations (Moschella et al. 2023).

A sample is re-described by its cosine similarity to a fixed set of *anchor*
samples, ``r(x) = [cos(x, a_1), ..., cos(x, a_k)]``. The result is invariant
to rotations and isotropic rescaling of the latent space (and, with
``center=True``, to translations), so two networks can be compared sample by
sample in the shared ``k``-dimensional anchor space even when their widths
differ.

A zero vector has no direction; its cosine with anything is defined as 0.0
(with a :class:`DegenerateRepresentationWarning`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from weightspace.similarity._validate import (
    SimilarityInputError,
    as_activation_pair,
    as_activations,
    to_numpy,
    warn_degenerate,
)

__all__ = ["relative_representation", "relative_similarity"]


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0.0
    if zero.any():
        warn_degenerate(f"{int(zero.sum())} zero vector(s) in {name}", "cosine 0.0", stacklevel=5)
    return x / np.where(zero[:, None], 1.0, norms)


def relative_representation(X: Any, anchors: Any, *, center: bool = False) -> np.ndarray:
    """Cosine similarity of every sample to every anchor.

    Args:
        X: absolute representation ``(n, p)``; torch or numpy.
        anchors: anchor representations in the same space, ``(k, p)``
            (usually ``X[anchor_indices]``).
        center: subtract the anchors' mean from samples and anchors first
            (adds translation invariance).

    Returns:
        float64 ``(n, k)`` in ``[-1, 1]``.
    """
    x = as_activations(X, "X", 1)
    a = as_activations(anchors, "anchors", 1)
    if a.shape[1] != x.shape[1]:
        raise SimilarityInputError(
            f"anchors must live in X's space: X has {x.shape[1]} features, anchors {a.shape[1]}"
        )
    if center:
        mu = a.mean(axis=0, keepdims=True)
        x, a = x - mu, a - mu
    return np.clip(_unit_rows(x, "X") @ _unit_rows(a, "anchors").T, -1.0, 1.0)


def relative_similarity(
    X: Any, Y: Any, anchor_indices: Sequence[int] | Any, *, center: bool = False
) -> float:
    """Similarity of two networks' relative representations.

    Both networks embed the same ``n`` samples; the anchors are the same
    samples (rows ``anchor_indices``) in each. The score is the mean over
    samples of the cosine between a sample's two relative representations
    (Moschella et al.'s "cosine" similarity).

    Args:
        X: ``(n, p)`` from network a.
        Y: ``(n, q)`` from network b (``q`` may differ from ``p``).
        anchor_indices: ``(k,)`` integer row indices, ``k >= 1``, unique.
        center: see :func:`relative_representation`.

    Returns:
        mean cosine in ``[-1, 1]``; 1.0 when ``Y`` is a rotation/rescaling of ``X``.
    """
    x, y = as_activation_pair(X, Y, 2)
    idx = to_numpy(anchor_indices, "anchor_indices")
    if idx.ndim != 1 or idx.size == 0 or not np.all(idx == np.round(idx)):
        raise SimilarityInputError("anchor_indices must be a non-empty 1-D array of integers")
    idx = idx.astype(np.int64)
    if idx.min() < -x.shape[0] or idx.max() >= x.shape[0]:
        raise SimilarityInputError(f"anchor_indices out of range for {x.shape[0]} samples")
    if np.unique(idx % x.shape[0]).size != idx.size:
        raise SimilarityInputError("anchor_indices contains duplicates")
    rx = relative_representation(x, x[idx], center=center)
    ry = relative_representation(y, y[idx], center=center)
    rows = np.einsum("ij,ij->i", _unit_rows(rx, "relative X"), _unit_rows(ry, "relative Y"))
    return float(np.clip(rows.mean(), -1.0, 1.0))
