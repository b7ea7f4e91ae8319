"""Assignment solvers of the matchers: the linear assignment problem (LAP)
and the exact assignment of attention heads with their nested neurons.

Every solver *maximises* a similarity (``cost`` here means a similarity
matrix, larger is better) and returns gather-convention indices: row ``i``
of model ``a`` is matched to column ``cols[i]`` of model ``b``.

Attention heads: a head group and the neuron groups nested in its heads
(q/k pairs, v; see :func:`weightspace.symmetry.split_groups`) are solved
together. For every pair (head ``i`` of ``a``, head ``j`` of ``b``) the best
within-head alignment is solved exactly (one small LAP per nested kind), its
value is the head-pair similarity, and an outer LAP assigns heads -- exact
block coordinate descent over (head assignment, within-head permutations).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from weightspace.symmetry import HeadLayout, Permutation

__all__ = [
    "WarmAssignment",
    "head_assignment",
    "head_assignment_value",
    "linear_assignment",
    "set_head_assignment_",
]


def linear_assignment(
    cost: torch.Tensor, *, overwrite: bool = False, potentials: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Maximising assignment of a square similarity matrix.

    When the row maxima already form a permutation, that is the optimum (no
    assignment can beat every row's maximum) and scipy is skipped; otherwise
    ``scipy.optimize.linear_sum_assignment`` solves it (minimising ``-cost``).

    Args:
        cost: ``[n, n]`` similarity of row ``i`` (model ``a``) and column
            ``j`` (model ``b``); any float dtype, solved in float64.
        overwrite: ``cost`` may be overwritten (negated in place when it is
            contiguous float64): no ``[n, n]`` copy for scipy.
        potentials: a warm start (see :class:`WarmAssignment`): column
            potentials ``v [n]`` of the minimisation; scipy solves
            ``-cost - v[None, :]`` instead. Shifting a column by a constant
            shifts every assignment's value by the same amount, so the
            optimum is the same; close-to-optimal dual potentials shorten
            scipy's augmenting paths (several times, measured on weight
            matching's cost matrices).

    Returns:
        ``(cols, value)``: int ``ndarray [n]`` with row ``i`` assigned to
        column ``cols[i]``, and ``sum_i cost[i, cols[i]]`` (float64).
    """
    src = cost.detach()
    c = src.to(torch.float64).contiguous().numpy()
    n = c.shape[0]
    best = c.argmax(1)
    if np.unique(best).size == n:
        return best, float(c[np.arange(n), best].sum())
    if potentials is not None:
        shifted = np.negative(c)  # one [n, n] array besides c
        shifted -= potentials[None, :]
        rows, cols = linear_sum_assignment(shifted)
        del shifted
        return cols, float(c[rows, cols].sum())
    if overwrite or src.dtype != torch.float64 or not src.is_contiguous():  # c is ours: negate it in place
        neg = np.negative(c, out=c)
    else:
        neg = -c
    rows, cols = linear_sum_assignment(neg)  # scipy's maximize=True negates the same way, into a copy
    return cols, -float(neg[rows, cols].sum())


class WarmAssignment:
    """Repeated :func:`linear_assignment` solves of one coordinate whose
    similarity matrix changes a little between solves (coordinate descent),
    each warm-started from dual potentials of the previous solve.

    After a solve with assignment ``sigma``, the column potentials ``v`` of
    the minimisation (``w = -cost``) are tightened by ``rounds`` Bellman-Ford
    relaxations of the dual constraints ``v_j <= v_sigma(i) + w_ij -
    w_i,sigma(i)`` (exact duals of that solve after enough rounds; a few
    rounds already carry most of the gain) and passed to the next solve as
    ``potentials``. The assignment each solve returns is the optimum of its
    own matrix, with or without the warm start: only scipy's work changes.

    Args:
        rounds: relaxation rounds per solve (each one ``[n, n]`` pass).
    """

    def __init__(self, rounds: int = 3) -> None:
        self.rounds = int(rounds)
        self.potentials: np.ndarray | None = None

    def solve(self, cost: torch.Tensor) -> tuple[np.ndarray, float]:
        """``(cols, value)`` of :func:`linear_assignment` (``cost`` is not modified)."""
        cols, value = linear_assignment(cost, potentials=self.potentials)
        c = cost.detach().to(torch.float64).numpy()
        n = c.shape[0]
        slack = np.subtract(c[np.arange(n), cols][:, None], c)  # w_ij - w_i,sigma(i), the minimisation's
        buf = np.empty_like(slack)  # two [n, n] arrays at most (GPT-2's MLP: 3072 x 3072)
        v = np.zeros(n) if self.potentials is None else self.potentials
        for _ in range(self.rounds):
            nv = np.minimum(v, np.add(slack, v[cols][:, None], out=buf).min(0))
            if np.array_equal(nv, v):
                break
            v = nv
        self.potentials = v
        return cols, value


def head_assignment(
    S: Sequence[torch.Tensor], R: torch.Tensor
) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Head assignment with optimal within-head alignment.

    Args:
        S: per nested kind ``k``, similarities ``[h, n_k, h, n_k]`` between
            neuron ``r`` of head ``i`` of ``a`` and neuron ``r'`` of head ``j``
            of ``b``.
        R: ``[h, h]`` similarity of the within-head positions no nested
            group permutes.

    Returns:
        ``sigma`` int ``ndarray [h]`` (head of ``b`` assigned to head ``i`` of
        ``a``), per kind ``pi_k`` int ``ndarray [h, n_k]`` (within-head
        permutation of *old* head ``j`` of ``b``), and the optimal value.
    """
    h = R.shape[0]
    V = R.detach().to(torch.float64).clone()
    cols = [[[None] * h for _ in range(h)] for _ in S]
    for k, Sk in enumerate(S):
        Sk = Sk.detach().to(torch.float64)
        for i in range(h):
            for j in range(h):
                c, v = linear_assignment(Sk[i, :, j, :])
                cols[k][i][j] = c
                V[i, j] += v
    sigma, value = linear_assignment(V)
    pis = []
    for k, Sk in enumerate(S):
        pi = np.zeros((h, Sk.shape[1]), dtype=np.int64)
        for i in range(h):
            pi[sigma[i]] = cols[k][i][sigma[i]]
        pis.append(pi)
    return sigma, pis, value


def head_assignment_value(
    S: Sequence[torch.Tensor], R: torch.Tensor, layout: HeadLayout, perm: Mapping[str, torch.Tensor]
) -> float:
    """Objective of the (head, within-head) permutation held in ``perm``.

    Args:
        S, R: as for :func:`head_assignment` (``[h, n_k, h, n_k]``, ``[h, h]``).
        layout: the head group and its nested groups.
        perm: ``{group: LongTensor[size]}`` holding ``layout``'s head group
            (``[h]``) and every nested group (``[n_k]``).

    Returns:
        ``sum_i R[i, sigma_i] + sum_k sum_i sum_r S_k[i, r, sigma_i, pi_k(sigma_i)[r]]``
        (float64) -- the value :func:`head_assignment` maximises.
    """
    sigma = perm[layout.group.name].long()
    val = float(R.to(torch.float64)[torch.arange(len(sigma)), sigma].sum())
    for Sk, subs in zip(S, layout.subs):
        Sk = Sk.to(torch.float64)
        n = Sk.shape[1]
        for i, j in enumerate(sigma.tolist()):
            pj = perm[subs[j].name].long()
            val += float(Sk[i, torch.arange(n), j, pj].sum())
    return val


def set_head_assignment_(
    perm: Permutation, layout: HeadLayout, sigma: np.ndarray, pis: Sequence[np.ndarray]
) -> None:
    """Write a :func:`head_assignment` solution into ``perm`` **in place**.

    Args:
        perm: ``{group: LongTensor[size]}``, modified: the head group gets
            ``sigma`` (``[h]``), nested group ``layout.subs[k][j]`` gets
            ``pis[k][j]`` (``[n_k]``).
        layout: the head group and its nested groups.
        sigma, pis: from :func:`head_assignment`.
    """
    perm[layout.group.name] = torch.as_tensor(sigma, dtype=torch.long)
    for subs, pi in zip(layout.subs, pis):
        for j, g in enumerate(subs):
            perm[g.name] = torch.as_tensor(pi[j], dtype=torch.long)
