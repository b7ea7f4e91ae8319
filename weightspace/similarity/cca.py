r"""Canonical correlation analysis and its descendants: CCA, SVCCA (Raghu et
al. 2017) and PWCCA (Morcos et al. 2018).

Shapes: ``X`` is ``(n, p)``, ``Y`` is ``(n, q)`` over the same ``n`` samples.

CCA is computed from orthonormal bases of the centred column spaces: with
thin SVDs ``X_c = U_x S_x V_x^T`` (rank ``r_x``) and ``Y_c = U_y S_y V_y^T``,
the canonical correlations are the singular values of ``U_x^T U_y``. This
needs no covariance inverse, so it is stable for rank-deficient inputs:
directions with singular value below ``max(n, p) * eps * s_max`` are dropped
(this is also how constant or duplicated neurons are handled).

Caveat: when ``r_x + r_y > n - 1`` the two column spaces must intersect and
some canonical correlations are exactly 1 whatever the data; a
``UserWarning`` says so. Use many more samples than neurons (Raghu et al.).

A representation with zero variance has rank 0: it has no canonical
directions; the similarity is defined as 0.0 (with a
:class:`DegenerateRepresentationWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg

from weightspace.similarity._validate import (
    SimilarityInputError,
    as_activation_pair,
    center,
    warn_degenerate,
)

__all__ = ["CCAResult", "cca", "pwcca", "svcca"]


@dataclass(frozen=True)
class CCAResult:
    """Result of :func:`cca`.

    Attributes:
        correlations: canonical correlations, descending, shape ``(k,)`` with
            ``k = min(rank X, rank Y)`` (empty if either has rank 0).
        x_variates: canonical variates of ``X`` in sample space, orthonormal
            columns, shape ``(n, k)``.
        y_variates: canonical variates of ``Y``, shape ``(n, k)``.
        rank_x, rank_y: numerical ranks of the centred inputs.
    """

    correlations: np.ndarray
    x_variates: np.ndarray
    y_variates: np.ndarray
    rank_x: int
    rank_y: int

    @property
    def mean(self) -> float:
        """Mean canonical correlation (0.0 when there are none)."""
        return float(self.correlations.mean()) if self.correlations.size else 0.0


def _basis(xc: np.ndarray, keep: float | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis ``(n, r)`` of the column space of centred ``xc`` and
    its singular values ``(r,)``; ``keep`` truncates (SVCCA)."""
    u, s, _ = linalg.svd(xc, full_matrices=False, lapack_driver="gesdd")
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0], s[:0]
    tol = max(xc.shape) * np.finfo(np.float64).eps * s[0]
    r = int((s > tol).sum())
    if keep is not None:
        if isinstance(keep, (int, np.integer)) and not isinstance(keep, bool):
            if keep < 1:
                raise SimilarityInputError(f"keep must be >= 1 components, got {keep}")
            r = min(r, int(keep))
        else:
            frac = float(keep)
            if not 0.0 < frac <= 1.0:
                raise SimilarityInputError(
                    f"keep must be a variance fraction in (0, 1] or an int, got {keep}"
                )
            var = np.cumsum(s[:r] ** 2) / np.sum(s[:r] ** 2)
            # smallest number of directions whose variance reaches frac
            r = min(r, int(np.searchsorted(var, frac - 1e-12) + 1))
    return u[:, :r], s[:r]


def _cca_centered(xc, yc, keep_x=None, keep_y=None, stacklevel=3) -> CCAResult:
    n = xc.shape[0]
    ux, _ = _basis(xc, keep_x)
    uy, _ = _basis(yc, keep_y)
    rx, ry = ux.shape[1], uy.shape[1]
    if rx == 0 or ry == 0:
        warn_degenerate("X" if rx == 0 else "Y", "no canonical correlations (similarity 0.0)", stacklevel + 1)
        return CCAResult(np.zeros(0), ux[:, :0], uy[:, :0], rx, ry)
    if rx + ry > n - 1:
        warnings.warn(
            f"CCA with n={n} samples and ranks {rx} + {ry} > n - 1: the column spaces must "
            "intersect, so some canonical correlations are 1 regardless of the data; "
            "use more samples than neurons (or SVCCA with fewer components)",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    a, rho, bt = linalg.svd(ux.T @ uy, full_matrices=False, lapack_driver="gesdd")
    k = min(rx, ry)
    rho = np.clip(rho[:k], 0.0, 1.0)
    return CCAResult(rho, ux @ a[:, :k], uy @ bt.T[:, :k], rx, ry)


def cca(X: Any, Y: Any) -> CCAResult:
    """Canonical correlation analysis.

    Args:
        X: activations ``(n, p)``; torch or numpy.
        Y: activations ``(n, q)``, same samples.

    Returns:
        :class:`CCAResult` (``.correlations`` ``(k,)``, ``.mean``).

    Raises:
        SimilarityInputError: mismatched ``n``, ``n < 2``, not 2-D, NaN/Inf.
    """
    x, y = as_activation_pair(X, Y, 2)
    return _cca_centered(center(x), center(y))


def svcca(X: Any, Y: Any, *, keep: float | int = 0.99) -> float:
    """SVCCA similarity (Raghu et al. 2017): SVD-reduce each representation to
    the top directions holding ``keep`` of its variance (or ``keep`` directions
    if an int), then the mean canonical correlation.

    Args:
        X: ``(n, p)``.
        Y: ``(n, q)``.
        keep: variance fraction in ``(0, 1]`` (default 0.99, as in the paper)
            or a number of directions.

    Returns:
        mean canonical correlation in ``[0, 1]``; 0.0 (with a warning) for a
        zero-variance representation.
    """
    x, y = as_activation_pair(X, Y, 2)
    return _cca_centered(center(x), center(y), keep, keep).mean


def pwcca(X: Any, Y: Any) -> float:
    """Projection-weighted CCA (Morcos et al. 2018).

    Canonical correlations ``rho_i`` are averaged with weights
    ``alpha_i ∝ sum_j |<h_i, x_j>|``, where ``h_i`` are the (unit) canonical
    variates of ``X`` and ``x_j`` its centred neurons: directions that account
    for more of ``X`` count more. **Not symmetric**: the weights come from
    ``X`` (the first argument), as in the reference implementation.

    Args:
        X: ``(n, p)`` -- the representation whose neurons set the weights.
        Y: ``(n, q)``.

    Returns:
        ``sum_i alpha_i rho_i`` in ``[0, 1]``; 0.0 (with a warning) for a
        zero-variance representation.
    """
    x, y = as_activation_pair(X, Y, 2)
    xc = center(x)
    res = _cca_centered(xc, center(y))
    if res.correlations.size == 0:
        return 0.0
    alpha = np.abs(res.x_variates.T @ xc).sum(axis=1)
    total = alpha.sum()
    if total <= 0:  # pragma: no cover - rank > 0 implies a non-zero projection
        return 0.0
    return float((alpha / total) @ res.correlations)
