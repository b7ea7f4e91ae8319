"""CCA / SVCCA / PWCCA and the orthogonal Procrustes distance."""

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes, sqrtm

from weightspace.similarity import (
    DegenerateRepresentationWarning,
    SimilarityInputError,
    cca,
    procrustes_distance,
    pwcca,
    svcca,
)


def data(n=200, p=5, q=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) @ rng.normal(size=(p, p))
    Y = X[:, :q] @ rng.normal(size=(q, q)) + noise * rng.normal(size=(n, q))
    return X, Y


def ref_cca(X, Y):
    """Canonical correlations from the covariance definition
    ``svd(Sxx^-1/2 Sxy Syy^-1/2)``, plus the X-side canonical directions."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    sxx, syy, sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    ix, iy = np.linalg.inv(np.real(sqrtm(sxx))), np.linalg.inv(np.real(sqrtm(syy)))
    u, s, _ = np.linalg.svd(ix @ sxy @ iy)
    return s, Xc, Xc @ ix @ u


def rand_orth(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# ----------------------------------------------------------------- CCA


def test_cca_matches_covariance_definition():
    X, Y = data()
    want, _, _ = ref_cca(X, Y)
    res = cca(X, Y)
    np.testing.assert_allclose(res.correlations, want[:4], rtol=1e-9)
    assert res.mean == pytest.approx(want[:4].mean())
    assert res.x_variates.shape == (200, 4) and res.rank_x == 5 and res.rank_y == 4
    np.testing.assert_allclose(res.x_variates.T @ res.x_variates, np.eye(4), atol=1e-10)
    # variates are correlated pairwise by exactly rho
    np.testing.assert_allclose(np.diag(res.x_variates.T @ res.y_variates), res.correlations, atol=1e-10)


def test_cca_invariant_to_any_invertible_linear_map_unlike_cka():
    X, Y = data()
    A = np.diag([10.0, 1, 0.1, 3, 1]) @ np.random.default_rng(9).normal(size=(5, 5))
    np.testing.assert_allclose(cca(X @ A + 4, Y).correlations, cca(X, Y).correlations, rtol=1e-8)


def test_cca_symmetric_and_identity():
    X, Y = data()
    np.testing.assert_allclose(cca(X, Y).correlations, cca(Y, X).correlations, rtol=1e-10)
    np.testing.assert_allclose(cca(X, X).correlations, 1.0, atol=1e-10)


def test_cca_rank_deficient_and_constant_inputs():
    X, Y = data()
    Xd = np.hstack([X, X[:, :2] * 2.0, np.full((200, 1), 0.1)])  # duplicated + constant columns
    res = cca(Xd, Y)
    assert res.rank_x == 5
    np.testing.assert_allclose(res.correlations, cca(X, Y).correlations, rtol=1e-8)
    with pytest.warns(DegenerateRepresentationWarning):
        r0 = cca(np.full((10, 3), 2.0), Y[:10])
    assert r0.correlations.size == 0 and r0.mean == 0.0
    with pytest.warns(DegenerateRepresentationWarning):
        assert svcca(np.zeros((10, 3)), Y[:10]) == 0.0
    with pytest.warns(DegenerateRepresentationWarning):
        assert pwcca(np.zeros((10, 3)), Y[:10]) == 0.0


def test_cca_warns_when_samples_are_too_few():
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="regardless of the data"):
        res = cca(rng.normal(size=(6, 4)), rng.normal(size=(6, 4)))
    assert np.all(np.isfinite(res.correlations))


def test_cca_bad_input():
    with pytest.raises(SimilarityInputError, match="same samples"):
        cca(np.ones((4, 2)), np.ones((5, 2)))


# ----------------------------------------------------------------- SVCCA / PWCCA


def test_svcca_full_variance_equals_cca_and_truncation():
    X, Y = data()
    assert svcca(X, Y, keep=1.0) == pytest.approx(cca(X, Y).mean, rel=1e-10)
    # keep=k directions: CCA of the top-k principal subspaces
    u, s, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    v, t, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    assert svcca(X, Y, keep=2) == pytest.approx(cca(u[:, :2] * s[:2], v[:, :2] * t[:2]).mean, rel=1e-10)
    with pytest.raises(SimilarityInputError):
        svcca(X, Y, keep=1.5)
    with pytest.raises(SimilarityInputError):
        svcca(X, Y, keep=0)


def test_svcca_ignores_low_variance_noise_directions():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 3))
    X = np.hstack([Z, 1e-4 * rng.normal(size=(300, 6))])
    Y = np.hstack([Z @ rand_orth(3, 2), 1e-4 * rng.normal(size=(300, 6))])
    assert svcca(X, Y, keep=0.99) == pytest.approx(1.0, abs=1e-6)
    assert cca(X, Y).mean < 0.6  # plain CCA is dragged down by the noise directions


def test_pwcca_matches_reference_weighting():
    X, Y = data(noise=2.0)
    rho, Xc, dirs = ref_cca(X, Y)
    k = 4
    P, _ = np.linalg.qr(dirs[:, :k])
    w = np.abs(P.T @ Xc).sum(axis=1)
    want = (w / w.sum()) @ rho[:k]
    assert pwcca(X, Y) == pytest.approx(want, rel=1e-7)


def test_pwcca_properties():
    X, Y = data(noise=2.0)
    assert 0.0 <= pwcca(X, Y) <= 1.0
    assert pwcca(X, Y) != pytest.approx(pwcca(Y, X), rel=1e-3)  # documented asymmetry
    assert pwcca(X, X @ rand_orth(5, 3)) == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------- Procrustes


def test_procrustes_matches_scipy_orthogonal_procrustes():
    X, Y = data(p=5, q=5)
    Xn = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0))
    Yn = (Y - Y.mean(0)) / np.linalg.norm(Y - Y.mean(0))
    R, _ = orthogonal_procrustes(Yn, Xn)
    want = np.linalg.norm(Xn - Yn @ R) ** 2
    assert procrustes_distance(X, Y, squared=True) == pytest.approx(want, rel=1e-9)
    assert procrustes_distance(X, Y) == pytest.approx(np.sqrt(want), rel=1e-9)


def test_procrustes_invariances_and_non_invariance():
    X, Y = data(p=5, q=5)
    assert procrustes_distance(X, 4.0 * X @ rand_orth(5, 1) - 3.0, squared=True) == pytest.approx(0.0, abs=1e-12)
    assert procrustes_distance(X, Y) == pytest.approx(procrustes_distance(Y, X), rel=1e-12)
    A = np.diag([10.0, 1, 1, 0.1, 1])
    assert procrustes_distance(X, X @ A) > 0.1


def test_procrustes_wide_layers_and_different_widths():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(10, 40)), rng.normal(size=(10, 25))
    Xn = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0))
    Yn = (Y - Y.mean(0)) / np.linalg.norm(Y - Y.mean(0))
    want = 2 - 2 * np.linalg.svd(Xn.T @ Yn, compute_uv=False).sum()
    assert procrustes_distance(X, Y, squared=True) == pytest.approx(want, rel=1e-9)
    # zero-padding the narrower side to equal width gives the same value
    Ypad = np.hstack([Y, np.zeros((10, 15))])
    assert procrustes_distance(X, Ypad) == pytest.approx(procrustes_distance(X, Y), rel=1e-10)


def test_procrustes_triangle_inequality():
    rng = np.random.default_rng(5)
    reps = [rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6)) for _ in range(4)]
    for a in reps:
        for b in reps:
            for c in reps:
                assert procrustes_distance(a, c) <= procrustes_distance(a, b) + procrustes_distance(b, c) + 1e-10


def test_procrustes_degenerate_and_bad_input():
    X, _ = data(n=12)
    with pytest.warns(DegenerateRepresentationWarning):
        assert procrustes_distance(np.zeros((12, 3)), X, squared=True) == 1.0
    with pytest.warns(DegenerateRepresentationWarning):
        assert procrustes_distance(np.zeros((12, 3)), np.ones((12, 2))) == 0.0
    with pytest.raises(SimilarityInputError, match="non-finite"):
        procrustes_distance(torch.tensor([[1.0], [float("nan")]]), np.ones((2, 1)))
