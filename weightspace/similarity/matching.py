"""Neuron-level comparison: correlation matching for convergent learning
(Li et al. 2016).

Shapes: ``X`` is ``(n, p)`` (``p`` neurons of network a over ``n`` samples),
``Y`` is ``(n, q)``. The ``(p, q)`` matrix of Pearson (or Spearman)
correlations between neurons is matched one-to-one with
``scipy.optimize.linear_sum_assignment`` (maximising the summed correlation),
or -- Li et al.'s "semi-matching" -- each neuron of ``X`` takes its best
partner in ``Y``.

A constant neuron (zero variance over the samples, e.g. a dead ReLU) has no
defined correlation; it is given correlation 0.0 with every neuron and a
:class:`DegenerateRepresentationWarning` is issued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from weightspace.similarity._validate import (
    SimilarityInputError,
    as_activation_pair,
    center,
    warn_degenerate,
)

__all__ = ["NeuronMatch", "match_neurons", "match_neurons_by_layer", "neuron_correlation"]

_METHODS = ("pearson", "spearman")


def _standardize(x: np.ndarray, name: str) -> np.ndarray:
    """Columns centred and scaled to unit norm; constant columns stay zero."""
    xc = center(x)
    norms = np.linalg.norm(xc, axis=0)
    dead = norms == 0.0
    if dead.any():
        warn_degenerate(
            f"{int(dead.sum())} neuron(s) of {name} (e.g. index {int(np.flatnonzero(dead)[0])})",
            "correlation 0.0 for them",
            stacklevel=5,
        )
    return xc / np.where(dead, 1.0, norms)


def neuron_correlation(X: Any, Y: Any, *, method: str = "pearson") -> np.ndarray:
    """Correlation between every neuron of ``X`` and every neuron of ``Y``.

    Args:
        X: ``(n, p)``; torch or numpy.
        Y: ``(n, q)``, same samples.
        method: ``"pearson"`` or ``"spearman"`` (Pearson on ranks from
            ``scipy.stats.rankdata``, ties averaged -- what
            ``scipy.stats.spearmanr`` computes).

    Returns:
        float64 ``(p, q)`` in ``[-1, 1]``; rows/columns of constant neurons are 0.
    """
    if method not in _METHODS:
        raise SimilarityInputError(f"method must be one of {_METHODS}, got {method!r}")
    x, y = as_activation_pair(X, Y, 2)
    if method == "spearman":
        x, y = rankdata(x, axis=0), rankdata(y, axis=0)
    c = _standardize(x, "X").T @ _standardize(y, "Y")
    return np.clip(c, -1.0, 1.0)


@dataclass(frozen=True)
class NeuronMatch:
    """Result of :func:`match_neurons`.

    Attributes:
        rows: matched neurons of ``X``, shape ``(k,)``, ascending.
        cols: their partners in ``Y``, shape ``(k,)``.
        correlations: correlation of each matched pair, shape ``(k,)``.
        correlation_matrix: the full ``(p, q)`` correlation matrix.
        method: ``"pearson"`` or ``"spearman"``.
        one_to_one: ``True`` for assignment (``k = min(p, q)``), ``False`` for
            semi-matching (``k = p``; partners may repeat).
    """

    rows: np.ndarray
    cols: np.ndarray
    correlations: np.ndarray
    correlation_matrix: np.ndarray
    method: str
    one_to_one: bool

    @property
    def mean(self) -> float:
        """Mean matched correlation."""
        return float(self.correlations.mean())

    def permutation(self) -> np.ndarray:
        """``perm`` (shape ``(p,)``) with ``Y[:, perm]`` aligned to ``X``'s
        neuron order (one-to-one matching of equal widths only)."""
        p, q = self.correlation_matrix.shape
        if not self.one_to_one or p != q:
            raise SimilarityInputError(
                "permutation() needs a one-to-one matching of equal widths "
                f"(got {'one-to-one' if self.one_to_one else 'semi'}-matching of {p} x {q})"
            )
        perm = np.empty(p, dtype=np.int64)
        perm[self.rows] = self.cols
        return perm

    def to_dict(self) -> dict:
        """JSON-ready summary (without the full matrix)."""
        return {
            "method": self.method,
            "one_to_one": self.one_to_one,
            "mean": self.mean,
            "rows": self.rows.tolist(),
            "cols": self.cols.tolist(),
            "correlations": self.correlations.tolist(),
        }


def match_neurons(
    X: Any, Y: Any, *, method: str = "pearson", one_to_one: bool = True
) -> NeuronMatch:
    """Match the neurons of two representations by activation correlation.

    Args:
        X: ``(n, p)``.
        Y: ``(n, q)``, same samples.
        method: ``"pearson"`` or ``"spearman"``.
        one_to_one: ``True``: maximum-total-correlation bipartite matching
            (``linear_sum_assignment``); ``False``: each ``X`` neuron's most
            correlated ``Y`` neuron.

    Returns:
        :class:`NeuronMatch`; ``.mean`` is the layer's matched correlation.
    """
    c = neuron_correlation(X, Y, method=method)
    if one_to_one:
        rows, cols = linear_sum_assignment(c, maximize=True)
    else:
        rows, cols = np.arange(c.shape[0]), np.argmax(c, axis=1)
    return NeuronMatch(
        rows.astype(np.int64), cols.astype(np.int64), c[rows, cols], c, method, one_to_one
    )


def match_neurons_by_layer(
    acts_a: Mapping[str, Any],
    acts_b: Mapping[str, Any],
    *,
    layers: Iterable[str] | Mapping[str, str] | None = None,
    method: str = "pearson",
    one_to_one: bool = True,
) -> dict[str, NeuronMatch]:
    """:func:`match_neurons` for several layers of two networks.

    Args:
        acts_a: ``{layer: (n, p_i)}`` of network a.
        acts_b: ``{layer: (n, q_i)}`` of network b.
        layers: names present in both (default: every common name, in
            ``acts_a``'s order), or a mapping ``{layer_a: layer_b}``.
        method, one_to_one: as in :func:`match_neurons`.

    Returns:
        ``{layer_a: NeuronMatch}``.
    """
    if layers is None:
        pairs = {k: k for k in acts_a if k in acts_b}
        if not pairs:
            raise SimilarityInputError(
                "acts_a and acts_b share no layer names; pass layers={layer_a: layer_b}"
            )
    elif isinstance(layers, Mapping):
        pairs = dict(layers)
    else:
        pairs = {k: k for k in layers}
    out = {}
    for la, lb in pairs.items():
        if la not in acts_a or lb not in acts_b:
            raise SimilarityInputError(
                f"layer pair ({la!r}, {lb!r}) not found; network a has {list(acts_a)}, "
                f"network b has {list(acts_b)}"
            )
        out[la] = match_neurons(acts_a[la], acts_b[lb], method=method, one_to_one=one_to_one)
    return out
