r"""Orthogonal Procrustes distance (Ding et al. 2021; Williams et al. 2021).

Both representations are column-centred and scaled to unit Frobenius norm;
then

.. math::

    d^2(X, Y) = \min_{Q^T Q = I} \lVert X - Y Q \rVert_F^2
              = \lVert X\rVert_F^2 + \lVert Y\rVert_F^2 - 2\lVert X^T Y\rVert_*
              = 2 - 2\lVert X^T Y\rVert_*,

with ``||.||_*`` the nuclear norm (sum of singular values, via
``scipy.linalg.svdvals``). Widths may differ (the narrower side is implicitly
zero-padded). ``d`` is a metric on representations modulo translation,
isotropic scaling and rotation; ``d^2`` lies in ``[0, 2]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg

from weightspace.similarity._validate import as_activation_pair, center, warn_degenerate

__all__ = ["procrustes_distance"]


def _reduce(xc: np.ndarray) -> np.ndarray:
    """An ``(n, min(n, p))`` matrix ``R`` with ``R R^T = X X^T`` -- same
    nuclear norms against any ``Y`` -- so wide layers cost ``O(n^2 p)``."""
    n, p = xc.shape
    if p <= n:
        return xc
    # X^T = Q R  =>  X = R^T Q^T and ||X^T Y||_* = ||R Y||_* (Q has orthonormal columns).
    r = linalg.qr(xc.T, mode="r")[0]
    return r[:n].T


def procrustes_distance(X: Any, Y: Any, *, squared: bool = False) -> float:
    """Orthogonal Procrustes distance between two representations.

    Args:
        X: activations ``(n, p)``; torch or numpy.
        Y: activations ``(n, q)``, same samples.
        squared: return ``d^2 = 2 - 2||X^T Y||_*`` (Ding et al.'s form)
            instead of ``d``.

    Returns:
        ``d`` in ``[0, sqrt(2)]`` (or ``d^2`` in ``[0, 2]``); 0 for
        representations equal up to translation, rotation and scale.
        A zero-variance representation is taken as the zero matrix (it cannot
        be scaled to unit norm), with a warning: ``d^2 = 1`` against any other
        representation and 0 between two constant ones.

    Raises:
        SimilarityInputError: mismatched ``n``, ``n < 2``, not 2-D, NaN/Inf.
    """
    x, y = as_activation_pair(X, Y, 2)
    xs, ys = center(x), center(y)
    nx, ny = np.linalg.norm(xs), np.linalg.norm(ys)
    if nx == 0.0 or ny == 0.0:
        warn_degenerate("X" if nx == 0.0 else "Y", "distance to the zero matrix")
        d2 = float((nx > 0) + (ny > 0))
    else:
        a, b = _reduce(xs / nx), _reduce(ys / ny)
        nuc = float(linalg.svdvals(a.T @ b).sum())
        d2 = float(np.clip(2.0 - 2.0 * nuc, 0.0, 2.0))
    return d2 if squared else float(np.sqrt(d2))
