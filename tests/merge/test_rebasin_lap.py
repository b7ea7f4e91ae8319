"""The warm-started LAP of weight matching: each solve returns exactly the
assignment and value of a cold :func:`linear_assignment` of its own matrix."""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from weightspace.merge.assignment import WarmAssignment, linear_assignment


def _drifting(n, steps, seed):
    """Similarity matrices changing a little from one solve to the next, as a
    coordinate's cost does between coordinate-descent steps."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, n, dtype=torch.float64, generator=g)
    for _ in range(steps):
        c = c + 0.05 * torch.randn(n, n, dtype=torch.float64, generator=g)
        yield c.clone()


def test_warm_solves_equal_cold_solves():
    warm = WarmAssignment()
    for c in _drifting(60, 8, seed=0):
        cols, value = warm.solve(c)
        cold_cols, cold_value = linear_assignment(c.clone())
        rows, ref = linear_sum_assignment(c.numpy(), maximize=True)
        assert np.array_equal(cols, cold_cols) and np.array_equal(cols, ref)
        assert value == cold_value
    assert warm.potentials is not None and warm.potentials.shape == (60,)


def test_warm_solve_does_not_modify_the_cost():
    warm = WarmAssignment()
    for c in _drifting(20, 3, seed=1):
        before = c.clone()
        warm.solve(c)
        assert torch.equal(c, before)


def test_potentials_are_dual_feasible_after_enough_rounds():
    """With rounds to spare the relaxation reaches the exact duals of the
    minimisation: v_j <= v_sigma(i) + w_ij - w_i,sigma(i) for every i, j."""
    c = next(_drifting(30, 1, seed=2))
    warm = WarmAssignment(rounds=10_000)
    cols, _ = warm.solve(c)
    w = -c.numpy()
    v = warm.potentials
    slack = w - w[np.arange(30), cols][:, None] + v[cols][:, None] - v[None, :]
    assert slack.min() >= -1e-12


def test_float32_cost_and_row_maxima_shortcut():
    warm = WarmAssignment()
    c = torch.eye(5, dtype=torch.float32)[[2, 0, 1, 4, 3]]
    cols, value = warm.solve(c)  # row maxima form a permutation: no scipy
    assert cols.tolist() == [2, 0, 1, 4, 3] and value == 5.0
    cols2, value2 = warm.solve(c + 0.01 * torch.arange(25, dtype=torch.float32).view(5, 5))
    assert cols2.tolist() == linear_assignment(c + 0.01 * torch.arange(25, dtype=torch.float32).view(5, 5))[0].tolist()
