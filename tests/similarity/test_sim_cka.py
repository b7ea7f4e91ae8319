"""CKA and HSIC: known values against the n x n definitions, invariances,
small-n stability, degenerate inputs and bad-input errors."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace.similarity import (
    DegenerateRepresentationWarning,
    SimilarityInputError,
    center_gram,
    cka_from_grams,
    cka_matrix,
    gram_linear,
    gram_rbf,
    hsic,
    linear_cka,
    rbf_cka,
)


# ----------------------------------------------------------------- references


def ref_hkh_cka(K, L):
    """CKA straight from the definition with the explicit centering matrix."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    hsic_ = lambda A, B: np.trace(A @ H @ B @ H)
    return hsic_(K, L) / np.sqrt(hsic_(K, K) * hsic_(L, L))


def ref_hsic_u_statistic(K, L):
    """Unbiased HSIC as the U-statistic over ordered 4-tuples of distinct
    indices (Song et al. 2012, Thm. 1/eq. 4): independent of the closed form."""
    n = K.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def data(n=40, p=6, q=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, q)) + 0.5 * rng.normal(size=(n, q))
    return X, Y


# ----------------------------------------------------------------- known values


@pytest.mark.parametrize("n,p,q", [(40, 6, 5), (12, 30, 25), (5, 3, 40), (2, 3, 4), (3, 1, 1)])
def test_linear_cka_matches_hkh_definition(n, p, q):
    # (12, 30, 25) and (5, 3, 40) take the centred-Gram route, the others feature space.
    X, Y = data(n, p, q, seed=n + p)
    want = ref_hkh_cka(X @ X.T, Y @ Y.T)
    assert linear_cka(X, Y) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_rbf_cka_matches_hkh_definition_with_fixed_sigma():
    X, Y = data(30, 4, 3)
    sigma = 1.7
    d = lambda A: ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
    want = ref_hkh_cka(np.exp(-d(X) / (2 * sigma**2)), np.exp(-d(Y) / (2 * sigma**2)))
    assert rbf_cka(X, Y, sigma=sigma) == pytest.approx(want, rel=1e-10)


def test_gram_rbf_median_heuristic():
    X, _ = data(20, 3, 1)
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(20, 1)
    sigma = 0.5 * np.sqrt(np.median(d2[iu]))
    np.testing.assert_allclose(gram_rbf(X, threshold=0.5), np.exp(-d2 / (2 * sigma**2)), rtol=1e-12)


def test_center_gram_is_hkh():
    rng = np.random.default_rng(1)
    K = rng.normal(size=(9, 9))
    H = np.eye(9) - 1 / 9
    np.testing.assert_allclose(center_gram(K), H @ K @ H, atol=1e-12)


def test_biased_hsic_value():
    X, Y = data(15, 3, 2)
    K, L = X @ X.T, Y @ Y.T
    H = np.eye(15) - 1 / 15
    assert hsic(K, L) == pytest.approx(np.trace(K @ H @ L @ H) / 14**2, rel=1e-12)


def test_unbiased_hsic_matches_u_statistic():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    K, L = X @ X.T, np.exp(-((Y[:, None] - Y[None]) ** 2).sum(-1))
    assert hsic(K, L, unbiased=True) == pytest.approx(ref_hsic_u_statistic(K, L), rel=1e-10)


def test_unbiased_linear_cka_feature_space_equals_gram_form():
    X, Y = data(25, 4, 30)
    Xs = X + 3.0  # uncentred Grams: the estimator is translation invariant
    want = cka_from_grams(Xs @ Xs.T, Y @ Y.T, unbiased=True)
    assert linear_cka(X, Y, unbiased=True) == pytest.approx(want, rel=1e-8)
    assert linear_cka(Xs, Y, unbiased=True) == pytest.approx(want, rel=1e-8)


def test_unbiased_differs_from_biased_and_is_nearly_zero_for_independent_data():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    biased, unbiased = linear_cka(X, Y), linear_cka(X, Y, unbiased=True)
    # the biased estimator of independent data is inflated by ~p/n; the unbiased one is ~0
    assert biased > 0.005
    assert abs(unbiased) < biased / 3


# ----------------------------------------------------------------- invariances


def rand_orth(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariant_to_orthogonal_maps_scaling_and_translation(unbiased):
    X, Y = data(50, 6, 5)
    base = linear_cka(X, Y, unbiased=unbiased)
    Xt = 3.7 * X @ rand_orth(6, 1) + 5.0
    Yt = 0.01 * Y @ rand_orth(5, 2) - 2.0
    assert linear_cka(Xt, Yt, unbiased=unbiased) == pytest.approx(base, rel=1e-9)


def test_rbf_cka_invariant_to_orthogonal_maps_and_scaling_with_median_bandwidth():
    X, Y = data(40, 4, 3)
    base = rbf_cka(X, Y)
    assert rbf_cka(2.5 * X @ rand_orth(4, 3) + 1, Y @ rand_orth(3, 4)) == pytest.approx(base, rel=1e-9)


def test_not_invariant_to_arbitrary_invertible_linear_maps():
    X, Y = data(60, 6, 5)
    A = np.diag([10.0, 1, 1, 0.1, 1, 1]) @ rand_orth(6, 5)  # invertible, far from orthogonal
    assert abs(linear_cka(X @ A, Y) - linear_cka(X, Y)) > 0.05


def test_self_similarity_is_one_and_symmetric():
    X, Y = data(30, 5, 4)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), rel=1e-12)
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, X, unbiased=True) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    p=st.integers(1, 6),
    q=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    scale=st.floats(1e-3, 1e3),
)
def test_properties_random(n, p, q, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, p)) * scale, rng.normal(size=(n, q))
    v = linear_cka(X, Y)
    assert 0.0 <= v <= 1.0 and np.isfinite(v)
    assert v == pytest.approx(linear_cka(Y, X), rel=1e-9, abs=1e-12)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-9)
    assert v == pytest.approx(ref_hkh_cka(X @ X.T, Y @ Y.T), rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------- small n, degenerate


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_no_nan_at_small_n(n):
    rng = np.random.default_rng(n)
    X, Y = rng.normal(size=(n, 10)), rng.normal(size=(n, 3))
    assert np.isfinite(linear_cka(X, Y))
    assert np.isfinite(rbf_cka(X, Y))
    if n >= 4:
        assert np.isfinite(linear_cka(X, Y, unbiased=True))


def test_two_samples_cka_is_one():
    # two points span one direction in every representation: CKA = 1 exactly
    rng = np.random.default_rng(0)
    assert linear_cka(rng.normal(size=(2, 5)), rng.normal(size=(2, 7))) == pytest.approx(1.0)


def test_unbiased_needs_four_samples():
    X, Y = data(3, 2, 2)
    with pytest.raises(SimilarityInputError, match="at least 4"):
        linear_cka(X, Y, unbiased=True)
    with pytest.raises(SimilarityInputError, match="at least 4"):
        hsic(X @ X.T, Y @ Y.T, unbiased=True)


@pytest.mark.parametrize("fn", [linear_cka, rbf_cka])
def test_constant_representation_gives_zero_with_warning(fn):
    X = np.full((10, 4), 0.1)  # 0.1 is not exact in binary: rounding must not leak through
    _, Y = data(10, 3, 3)
    with pytest.warns(DegenerateRepresentationWarning):
        assert fn(X, Y) == 0.0
    with pytest.warns(DegenerateRepresentationWarning):
        assert fn(X, X) == 0.0


def test_constant_column_is_harmless():
    X, Y = data(20, 4, 3)
    Xc = np.hstack([X, np.full((20, 1), 0.3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert linear_cka(Xc, Y) == pytest.approx(linear_cka(X, Y), rel=1e-12)


def test_large_offset_is_stable():
    X, Y = data(50, 4, 3)
    assert linear_cka(X + 1e8, Y - 1e8) == pytest.approx(linear_cka(X, Y), rel=1e-6)


# ----------------------------------------------------------------- input handling


def test_torch_and_numpy_agree_and_inputs_untouched():
    X, Y = data(20, 4, 3)
    X0 = X.copy()
    t = torch.tensor(X, dtype=torch.float32)
    t0 = t.clone()
    assert linear_cka(t, Y) == pytest.approx(linear_cka(X.astype(np.float32), Y), rel=1e-12)
    assert np.array_equal(X, X0) and torch.equal(t, t0)
    assert linear_cka(torch.tensor(X), torch.tensor(Y)) == pytest.approx(linear_cka(X, Y), rel=1e-12)


@pytest.mark.parametrize(
    "X,Y,match",
    [
        (np.ones((5, 2)), np.ones((6, 2)), "same samples"),
        (np.ones(5), np.ones((5, 2)), "2-D"),
        (np.ones((5, 2, 2)), np.ones((5, 2)), "2-D"),
        (np.ones((1, 2)), np.ones((1, 2)), "at least 2"),
        (np.ones((5, 0)), np.ones((5, 2)), "no features"),
        (np.array([[1.0, np.nan], [2, 3], [4, 5]]), np.ones((3, 2)), "non-finite"),
        (np.array([[1.0, np.inf], [2, 3], [4, 5]]), np.ones((3, 2)), "non-finite"),
    ],
)
def test_bad_input_errors(X, Y, match):
    for fn in (linear_cka, rbf_cka):
        with pytest.raises(SimilarityInputError, match=match):
            fn(X, Y)


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError):
        linear_cka(np.ones((4, 2)), np.ones((5, 2)))


def test_gram_shape_errors():
    with pytest.raises(SimilarityInputError, match="square"):
        cka_from_grams(np.ones((3, 4)), np.ones((3, 3)))
    with pytest.raises(SimilarityInputError, match="same samples"):
        cka_from_grams(np.eye(3), np.eye(4))


def test_gram_linear():
    X, _ = data(6, 3, 1)
    np.testing.assert_allclose(gram_linear(X), X @ X.T)


# ----------------------------------------------------------------- matrices


def test_cka_matrix_equals_pairwise():
    rng = np.random.default_rng(4)
    A = {"a1": rng.normal(size=(30, 4)), "a2": rng.normal(size=(30, 50))}
    B = {"b1": rng.normal(size=(30, 3)), "b2": A["a1"] @ rng.normal(size=(4, 6)), "b3": rng.normal(size=(30, 40))}
    m = cka_matrix(A, B)
    assert m.values.shape == (2, 3)
    for (i, ka), (j, kb) in itertools.product(enumerate(A), enumerate(B)):
        assert m.values[i, j] == pytest.approx(linear_cka(A[ka], B[kb]), rel=1e-10)
        assert m[ka, kb] == m.values[i, j]
    mu = cka_matrix(A, B, unbiased=True)
    assert mu.values[0, 1] == pytest.approx(linear_cka(A["a1"], B["b2"], unbiased=True), rel=1e-10)
    mr = cka_matrix(A, B, kernel="rbf")
    assert mr.values[1, 2] == pytest.approx(rbf_cka(A["a2"], B["b3"]), rel=1e-10)


def test_cka_matrix_self_and_list_input():
    rng = np.random.default_rng(5)
    acts = [rng.normal(size=(20, 3)), rng.normal(size=(20, 5))]
    m = cka_matrix(acts)
    np.testing.assert_allclose(np.diag(m.values), 1.0)
    np.testing.assert_allclose(m.values, m.values.T)
    assert m.layers_a == ("a0", "a1")
    d = m.to_dict()
    assert d["values"][0][0] == pytest.approx(1.0)


def test_cka_matrix_errors():
    with pytest.raises(SimilarityInputError, match="same samples"):
        cka_matrix({"a": np.ones((5, 2))}, {"b": np.ones((6, 2))})
    with pytest.raises(SimilarityInputError, match="kernel"):
        cka_matrix({"a": np.eye(3)}, kernel="cosine")
