r"""Centered kernel alignment (Kornblith et al. 2019) and HSIC estimators.

Notation: ``X`` is ``(n, p)``, ``Y`` is ``(n, q)`` -- the activations of the
same ``n`` samples in two layers (or two networks). ``K`` and ``L`` are their
``(n, n)`` Gram matrices, ``H = I - 11^T/n`` the centering matrix.

.. math::

    \mathrm{CKA}(K, L) = \frac{\mathrm{HSIC}(K, L)}
                              {\sqrt{\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L)}},
    \qquad \mathrm{HSIC}(K, L) = \frac{\operatorname{tr}(KHLH)}{(n-1)^2}.

For the linear kernel ``K = X X^T`` this equals the feature-space formula

.. math::

    \mathrm{CKA}_\text{lin}(X, Y) = \frac{\lVert Y_c^T X_c \rVert_F^2}
        {\lVert X_c^T X_c \rVert_F \, \lVert Y_c^T Y_c \rVert_F},

with column-centred ``X_c, Y_c``. :func:`linear_cka` uses it and never forms
``H``; when ``n`` is smaller than the widths it switches to centred ``(n, n)``
Grams, whichever needs fewer flops (the value is the same).

The *unbiased* HSIC estimator (Song et al. 2012), used by minibatch CKA
(Nguyen et al. 2021) and by ``unbiased=True``, is

.. math::

    \mathrm{HSIC}_1(K, L) = \frac{1}{n(n-3)}\Big[\operatorname{tr}(\tilde K \tilde L)
      + \frac{1^T\tilde K 1 \; 1^T \tilde L 1}{(n-1)(n-2)}
      - \frac{2}{n-2} 1^T \tilde K \tilde L 1\Big],

where ``\tilde K`` is ``K`` with its diagonal set to zero; it needs ``n >= 4``.

Degenerate inputs: a representation with zero variance over the samples (all
rows identical) has no similarity structure; every CKA involving it --
including with itself -- is defined as ``0.0`` and a
:class:`~weightspace.similarity.DegenerateRepresentationWarning` is issued.
Individual constant features (dead ReLUs) are fine and need no special case.
All arithmetic is float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.spatial.distance import pdist, squareform

from weightspace.similarity._validate import (
    SimilarityInputError,
    as_activation_pair,
    as_activations,
    center,
    to_numpy,
    warn_degenerate,
)

__all__ = [
    "CKAMatrix",
    "center_gram",
    "cka_from_grams",
    "cka_matrix",
    "gram_linear",
    "gram_rbf",
    "hsic",
    "linear_cka",
    "rbf_cka",
]


# --------------------------------------------------------------------------- Grams


def gram_linear(X: Any) -> np.ndarray:
    """Linear-kernel Gram matrix ``X X^T``.

    Args:
        X: activations, shape ``(n, p)``.

    Returns:
        float64 array ``(n, n)``.
    """
    x = as_activations(X, "X", min_samples=1)
    return x @ x.T


def gram_rbf(X: Any, sigma: float | None = None, *, threshold: float = 1.0) -> np.ndarray:
    """Gaussian (RBF) kernel Gram matrix ``exp(-||x_i - x_j||^2 / (2 sigma^2))``.

    Args:
        X: activations, shape ``(n, p)``.
        sigma: bandwidth. ``None`` (default) uses Kornblith et al.'s heuristic
            ``threshold * sqrt(median squared distance)`` over the ``n(n-1)/2``
            distinct pairs (their code takes the median over the full ``n x n``
            matrix, diagonal included; excluding the zeros is the less biased
            choice). When more than half of the pairs coincide, the median of
            the non-zero distances is used so the bandwidth stays positive.
        threshold: multiplier of the median distance (``sigma is None`` only).

    Returns:
        float64 array ``(n, n)``; all ones when every row is identical.
    """
    x = as_activations(X, "X", min_samples=2)
    d2 = pdist(x, "sqeuclidean")
    if sigma is None:
        if threshold <= 0:
            raise SimilarityInputError(f"threshold must be > 0, got {threshold}")
        positive = d2[d2 > 0]
        if positive.size == 0:  # constant representation: any bandwidth gives all ones
            sigma = 1.0
        else:
            med = np.median(d2)
            sigma = float(threshold * np.sqrt(med if med > 0 else np.median(positive)))
    elif not (np.isfinite(sigma) and sigma > 0):
        raise SimilarityInputError(f"sigma must be a positive finite number, got {sigma}")
    k = squareform(np.exp(-d2 / (2.0 * float(sigma) ** 2)))
    np.fill_diagonal(k, 1.0)  # squareform leaves zeros on the diagonal
    return k


def _as_gram(K: Any, name: str) -> np.ndarray:
    k = to_numpy(K, name)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise SimilarityInputError(f"{name} must be a square (n, n) Gram matrix, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise SimilarityInputError(f"{name} contains non-finite values (NaN or Inf)")
    return k


def _as_gram_pair(K: Any, L: Any, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    k, l_ = _as_gram(K, "K"), _as_gram(L, "L")
    if k.shape != l_.shape:
        raise SimilarityInputError(
            f"K and L must be Grams over the same samples: shapes {k.shape} and {l_.shape}"
        )
    if k.shape[0] < min_samples:
        raise SimilarityInputError(
            f"Grams have {k.shape[0]} sample(s); this estimator needs at least {min_samples}"
        )
    return k, l_


def center_gram(K: Any) -> np.ndarray:
    """Doubly centred Gram ``H K H`` computed from row/column means (the
    centering matrix ``H`` is never formed).

    Args:
        K: Gram matrix, shape ``(n, n)``.

    Returns:
        new float64 array ``(n, n)``.
    """
    k = _as_gram(K, "K")
    row = k.mean(axis=1, keepdims=True)
    col = k.mean(axis=0, keepdims=True)
    return k - row - col + k.mean()


# --------------------------------------------------------------------------- HSIC


def _unbiased_terms(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(K with zero diagonal, its row sums, its total sum) for HSIC_1."""
    kt = k.copy()
    np.fill_diagonal(kt, 0.0)
    rows = kt.sum(axis=1)
    return kt, rows, float(rows.sum())


def _hsic1_from_terms(a, b, n: int) -> float:
    kt, rk, sk = a
    lt, rl, sl = b
    val = (
        float(np.vdot(kt, lt))
        + sk * sl / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * float(rk @ rl)
    )
    return val / (n * (n - 3))


def hsic(K: Any, L: Any, *, unbiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion from two Gram matrices.

    Args:
        K, L: Gram matrices over the same samples, shape ``(n, n)``.
        unbiased: ``False`` gives the biased estimator
            ``tr(K H L H) / (n-1)^2`` (needs ``n >= 2``); ``True`` the unbiased
            estimator of Song et al. 2012 (needs ``n >= 4``; may be negative).

    Returns:
        the HSIC estimate (float).
    """
    k, l_ = _as_gram_pair(K, L, 4 if unbiased else 2)
    n = k.shape[0]
    if unbiased:
        return _hsic1_from_terms(_unbiased_terms(k), _unbiased_terms(l_), n)
    return float(np.vdot(center_gram(k), center_gram(l_))) / (n - 1) ** 2


def _ratio(num: float, den_x: float, den_y: float, what: tuple[str, str], clip: bool) -> float:
    """``num / sqrt(den_x * den_y)`` with the documented degenerate fallback."""
    for den, name in ((den_x, what[0]), (den_y, what[1])):
        if not den > 0:
            warn_degenerate(name, "CKA = 0.0", stacklevel=4)
            return 0.0
    val = num / np.sqrt(den_x) / np.sqrt(den_y)
    return float(np.clip(val, 0.0, 1.0)) if clip else float(val)


def cka_from_grams(K: Any, L: Any, *, unbiased: bool = False) -> float:
    """CKA between two representations given by their Gram matrices (any kernel).

    Args:
        K, L: Gram matrices over the same samples, shape ``(n, n)``.
        unbiased: use the unbiased HSIC estimator (``n >= 4``); the result can
            then fall slightly outside ``[0, 1]``.

    Returns:
        CKA in ``[0, 1]`` (biased); ``0.0`` with a warning when either
        representation has zero variance (or, unbiased, a non-positive
        self-HSIC estimate).
    """
    k, l_ = _as_gram_pair(K, L, 4 if unbiased else 2)
    n = k.shape[0]
    if unbiased:
        a, b = _unbiased_terms(k), _unbiased_terms(l_)
        return _ratio(
            _hsic1_from_terms(a, b, n),
            _hsic1_from_terms(a, a, n),
            _hsic1_from_terms(b, b, n),
            ("K", "L"),
            clip=False,
        )
    kc, lc = center_gram(k), center_gram(l_)
    return _ratio(float(np.vdot(kc, lc)), float(np.vdot(kc, kc)), float(np.vdot(lc, lc)), ("K", "L"), True)


# --------------------------------------------------------------------------- linear CKA


class _LinearRep:
    """One centred representation with lazily cached quantities, so a layer x
    layer matrix computes each layer's self-similarity and (if used) Gram once.

    Holds ``x`` ``(n, p)`` centred float64, optionally its centred Gram
    ``(n, n)``, its row squared norms ``(n,)`` and ``||x||_F^2``.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.x = center(x)
        self.n, self.p = self.x.shape
        self._gram: np.ndarray | None = None
        self._self_dot: float | None = None
        self._row_sq: np.ndarray | None = None
        self.sq = float(np.vdot(self.x, self.x))

    @property
    def row_sq(self) -> np.ndarray:
        """Row squared norms ``(n,)`` (only the unbiased estimator needs them)."""
        if self._row_sq is None:
            self._row_sq = np.einsum("ij,ij->i", self.x, self.x)
        return self._row_sq

    @property
    def has_gram(self) -> bool:
        return self._gram is not None

    def gram(self) -> np.ndarray:
        if self._gram is None:
            self._gram = self.x @ self.x.T  # centred x -> already H K H
        return self._gram

    def self_dot(self) -> float:
        """``||x^T x||_F^2`` (= ``||x x^T||_F^2``) by the cheaper route."""
        if self._self_dot is None:
            if self.sq == 0.0:
                self._self_dot = 0.0
            elif self.has_gram or self.n < self.p:
                g = self.gram()
                self._self_dot = float(np.vdot(g, g))
            else:
                c = self.x.T @ self.x
                self._self_dot = float(np.vdot(c, c))
        return self._self_dot


def _cross_dot(a: _LinearRep, b: _LinearRep) -> float:
    """``||a^T b||_F^2`` choosing between ``(p, q)`` cross-covariance and Grams
    by flop count (both are exact)."""
    n = a.n
    feat_cost = n * a.p * b.p
    gram_cost = n * n * (1 + (0 if a.has_gram else a.p) + (0 if b.has_gram else b.p))
    if gram_cost < feat_cost:
        return float(np.vdot(a.gram(), b.gram()))
    c = a.x.T @ b.x
    return float(np.vdot(c, c))


def _linear_cka_reps(a: _LinearRep, b: _LinearRep, unbiased: bool, names=("X", "Y")) -> float:
    if a.sq == 0.0 or b.sq == 0.0:
        warn_degenerate(names[0] if a.sq == 0.0 else names[1], "CKA = 0.0", stacklevel=4)
        return 0.0
    if not unbiased:
        if a is b:
            return 1.0
        return _ratio(_cross_dot(a, b), a.self_dot(), b.self_dot(), names, clip=True)
    n = a.n

    def h1(u: _LinearRep, v: _LinearRep, dot: float) -> float:
        # HSIC_1 with K = x x^T on centred x (1^T x = 0 makes K~1 = -row_sq).
        return (
            dot - n / (n - 2) * float(u.row_sq @ v.row_sq) + u.sq * v.sq / ((n - 1) * (n - 2))
        ) / (n * (n - 3))

    return _ratio(
        h1(a, b, _cross_dot(a, b)), h1(a, a, a.self_dot()), h1(b, b, b.self_dot()), names, False
    )


def linear_cka(X: Any, Y: Any, *, unbiased: bool = False) -> float:
    """Linear CKA between two representations of the same samples.

    Computed with the feature-space formula
    ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (or the
    equivalent centred Grams when ``n`` is below the widths, whichever is
    cheaper); the ``n x n`` centering matrix is never formed.

    Args:
        X: activations ``(n, p)``; torch or numpy.
        Y: activations ``(n, q)``; same samples, same order.
        unbiased: use the unbiased HSIC estimator (Song et al. 2012; Kornblith
            et al.'s "debiased" CKA). Needs ``n >= 4``; can be slightly
            negative for unrelated representations.

    Returns:
        CKA; ``1.0`` for identical inputs, ``0.0`` with a
        :class:`DegenerateRepresentationWarning` when either input has zero
        variance.

    Raises:
        SimilarityInputError: different sample counts, ``n < 2`` (``n < 4``
            unbiased), not 2-D, NaN/Inf.
    """
    x, y = as_activation_pair(X, Y, 4 if unbiased else 2, keep_float=True)
    return _linear_cka_reps(_LinearRep(x), _LinearRep(y), unbiased)


def rbf_cka(
    X: Any,
    Y: Any,
    *,
    sigma: float | None = None,
    threshold: float = 1.0,
    unbiased: bool = False,
) -> float:
    """CKA with Gaussian (RBF) kernels; each representation gets its own
    bandwidth (see :func:`gram_rbf`). Forms two ``(n, n)`` Grams, so memory is
    ``O(n^2)`` -- use minibatch CKA for large ``n``.

    Args:
        X: activations ``(n, p)``.
        Y: activations ``(n, q)``.
        sigma: fixed bandwidth for both; ``None`` uses the median heuristic.
        threshold: median-distance multiplier (Kornblith et al. use 0.2-1.0).
        unbiased: unbiased HSIC (``n >= 4``).

    Returns:
        CKA; ``0.0`` with a warning for a constant representation.
    """
    x, y = as_activation_pair(X, Y, 4 if unbiased else 2)
    # A constant representation gives an all-ones Gram, whose centred form is
    # zero; _ratio turns that into the documented 0.0 + warning.
    return cka_from_grams(
        gram_rbf(x, sigma, threshold=threshold), gram_rbf(y, sigma, threshold=threshold), unbiased=unbiased
    )


# --------------------------------------------------------------------------- matrices


@dataclass(frozen=True)
class CKAMatrix:
    """CKA between every layer of one network (rows) and of another (columns).

    Attributes:
        values: float64 array ``(len(layers_a), len(layers_b))``.
        layers_a: row labels.
        layers_b: column labels.
        n_samples: samples the estimate is based on.
        method: ``"linear"``, ``"rbf"``, ``"minibatch"``, ... (free text).
        unbiased: whether the unbiased HSIC estimator was used.
    """

    values: np.ndarray
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    n_samples: int
    method: str = "linear"
    unbiased: bool = False
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key: tuple[str, str]) -> float:
        """``m["layer_a", "layer_b"]`` -> CKA of that pair."""
        a, b = key
        return float(self.values[self.layers_a.index(a), self.layers_b.index(b)])

    def matching_diagonal(self) -> dict[str, float]:
        """CKA of the layers that have the same name in both networks."""
        return {name: self[name, name] for name in self.layers_a if name in self.layers_b}

    def to_dict(self) -> dict:
        """JSON-ready dict (values as nested lists)."""
        return {
            "layers_a": list(self.layers_a),
            "layers_b": list(self.layers_b),
            "values": self.values.tolist(),
            "n_samples": int(self.n_samples),
            "method": self.method,
            "unbiased": bool(self.unbiased),
            **({"extra": self.extra} if self.extra else {}),
        }


def _named(acts: Any, prefix: str) -> tuple[list[str], list[Any]]:
    if isinstance(acts, Mapping):
        return [str(k) for k in acts.keys()], list(acts.values())
    if isinstance(acts, Sequence) and not isinstance(acts, (str, bytes)):
        return [f"{prefix}{i}" for i in range(len(acts))], list(acts)
    raise SimilarityInputError(
        f"expected a mapping name -> (n, p) activations or a list of them, got {type(acts).__name__}"
    )


def cka_matrix(
    acts_a: Mapping[str, Any] | Sequence[Any],
    acts_b: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    kernel: str = "linear",
    unbiased: bool = False,
    threshold: float = 1.0,
) -> CKAMatrix:
    """CKA between every layer pair of two networks from stored activations.

    Each layer's self-similarity (and Gram, when used) is computed once.

    Args:
        acts_a: ``{layer: (n, p_i)}`` (or a list; rows are then named ``a0, a1, ...``).
        acts_b: ``{layer: (n, q_j)}``; ``None`` compares ``acts_a`` with itself.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: unbiased HSIC estimator (``n >= 4``).
        threshold: RBF median-distance multiplier.

    Returns:
        :class:`CKAMatrix` with ``values`` of shape ``(len(acts_a), len(acts_b))``.
    """
    names_a, raw_a = _named(acts_a, "a")
    names_b, raw_b = _named(acts_a if acts_b is None else acts_b, "a" if acts_b is None else "b")
    if not names_a or not names_b:
        raise SimilarityInputError("cka_matrix needs at least one layer on each side")
    min_n = 4 if unbiased else 2
    keep = kernel == "linear"  # _LinearRep centres (and converts) in one pass
    xs_a = [as_activations(v, f"layer {k!r}", min_n, keep) for k, v in zip(names_a, raw_a)]
    xs_b = xs_a if acts_b is None else [
        as_activations(v, f"layer {k!r}", min_n, keep) for k, v in zip(names_b, raw_b)
    ]
    n = xs_a[0].shape[0]
    for k, v in zip(names_a + names_b, xs_a + xs_b):
        if v.shape[0] != n:
            raise SimilarityInputError(
                f"all layers must hold the same samples: layer {k!r} has {v.shape[0]} rows, "
                f"{names_a[0]!r} has {n}"
            )
    out = np.zeros((len(xs_a), len(xs_b)))
    if kernel == "linear":
        reps_a = [_LinearRep(x) for x in xs_a]
        reps_b = reps_a if acts_b is None else [_LinearRep(x) for x in xs_b]
        for i, ra in enumerate(reps_a):
            for j, rb in enumerate(reps_b):
                out[i, j] = _linear_cka_reps(ra, rb, unbiased, (names_a[i], names_b[j]))
    elif kernel == "rbf":
        grams_a = [gram_rbf(x, threshold=threshold) for x in xs_a]
        grams_b = grams_a if acts_b is None else [gram_rbf(x, threshold=threshold) for x in xs_b]
        for i, ka in enumerate(grams_a):
            for j, kb in enumerate(grams_b):
                out[i, j] = cka_from_grams(ka, kb, unbiased=unbiased)
    else:
        raise SimilarityInputError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    return CKAMatrix(out, tuple(names_a), tuple(names_b), n, kernel, unbiased)
