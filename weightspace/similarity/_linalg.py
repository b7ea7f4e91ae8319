"""Symmetric products through BLAS ``syrk`` (half the flops of ``A @ A.T``).

Both helpers return the *upper triangle* (diagonal included) of a symmetric
product in a Fortran-ordered float64 array whose strict lower triangle is 0;
the ``sym_*`` functions evaluate Frobenius products directly on that storage.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dsyrk


def gram_upper(x: np.ndarray) -> np.ndarray:
    """Upper triangle of ``x @ x.T``; ``x`` float64 ``(n, p)`` -> ``(n, n)``."""
    # x.T is Fortran-contiguous for C-ordered x, so BLAS reads it without a copy.
    return dsyrk(1.0, np.ascontiguousarray(x).T, trans=1)


def cov_upper(x: np.ndarray) -> np.ndarray:
    """Upper triangle of ``x.T @ x``; ``x`` float64 ``(n, p)`` -> ``(p, p)``."""
    return dsyrk(1.0, np.ascontiguousarray(x).T, trans=0)


def _flat(u: np.ndarray) -> np.ndarray:
    return u.ravel(order="K")


def sym_vdot(u: np.ndarray, v: np.ndarray) -> float:
    """``<S_u, S_v>_F`` of the symmetric matrices whose upper triangles are ``u, v``."""
    return 2.0 * float(np.dot(_flat(u), _flat(v))) - float(np.diagonal(u) @ np.diagonal(v))


def sym_full(u: np.ndarray) -> np.ndarray:
    """The full symmetric matrix from its upper triangle ``u`` (new array)."""
    out = np.array(u, order="C")
    i, j = np.tril_indices(out.shape[0], -1)
    out[i, j] = out[j, i]
    return out
