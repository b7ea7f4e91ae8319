"""Neuron correlation matching and relative representations."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from weightspace.similarity import (
    DegenerateRepresentationWarning,
    SimilarityInputError,
    match_neurons,
    match_neurons_by_layer,
    neuron_correlation,
    relative_representation,
    relative_similarity,
)


def acts(n=200, p=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p))


def test_pearson_and_spearman_match_numpy_scipy():
    X, Y = acts(p=4), np.exp(acts(p=3, seed=1))
    c = neuron_correlation(X, Y)
    np.testing.assert_allclose(c, np.corrcoef(X.T, Y.T)[:4, 4:], atol=1e-12)
    s = neuron_correlation(X, Y, method="spearman")
    np.testing.assert_allclose(s, spearmanr(X, Y).statistic[:4, 4:], atol=1e-12)
    Xt = np.round(X, 1)  # ties
    np.testing.assert_allclose(
        neuron_correlation(Xt, Y, method="spearman"), spearmanr(Xt, Y).statistic[:4, 4:], atol=1e-12
    )


def test_one_to_one_matching_recovers_a_permutation():
    rng = np.random.default_rng(2)
    X = acts(p=10)
    perm = rng.permutation(10)
    # Y's neuron j is X's neuron perm[j] up to positive scale, offset and noise
    Y = X[:, perm] * rng.uniform(0.5, 2, size=10) + 3.0 + 0.05 * rng.normal(size=(200, 10))
    m = match_neurons(torch.tensor(X), Y)
    assert m.one_to_one and m.rows.tolist() == list(range(10))
    np.testing.assert_array_equal(perm[m.cols], np.arange(10))
    assert m.mean > 0.99
    aligned = Y[:, m.permutation()]
    assert np.all(np.diag(np.corrcoef(X.T, aligned.T)[:10, 10:]) > 0.99)


def test_assignment_beats_or_equals_any_other_matching_and_semi_matching():
    X, Y = acts(p=6), acts(p=6, seed=3) + 0.5 * acts(p=6)
    m = match_neurons(X, Y)
    c = m.correlation_matrix
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.permutation(6)
        assert c[np.arange(6), p].sum() <= m.correlations.sum() + 1e-12
    semi = match_neurons(X, Y, one_to_one=False)
    np.testing.assert_array_equal(semi.cols, c.argmax(axis=1))
    assert semi.mean >= m.mean - 1e-12
    with pytest.raises(SimilarityInputError, match="one-to-one"):
        semi.permutation()


def test_rectangular_matching():
    X, Y = acts(p=3), acts(p=7, seed=1)
    m = match_neurons(X, Y)
    assert m.rows.size == 3 and len(set(m.cols.tolist())) == 3
    m2 = match_neurons(Y, X)
    assert m2.rows.size == 3
    with pytest.raises(SimilarityInputError, match="equal widths"):
        m.permutation()


def test_dead_neurons_give_zero_not_nan():
    X = acts(p=4)
    X[:, 1] = 0.0  # dead ReLU
    Y = acts(p=4, seed=1)
    for method in ("pearson", "spearman"):
        with pytest.warns(DegenerateRepresentationWarning, match="1 neuron"):
            m = match_neurons(X, Y, method=method)
        assert np.isfinite(m.correlation_matrix).all()
        assert np.all(m.correlation_matrix[1] == 0.0)


def test_by_layer_and_errors():
    A = {"l1": acts(p=4), "l2": acts(p=5, seed=1)}
    B = {"l1": acts(p=4, seed=2), "l2": A["l2"][:, ::-1].copy()}
    res = match_neurons_by_layer(A, B)
    assert set(res) == {"l1", "l2"} and res["l2"].mean == pytest.approx(1.0)
    assert res["l2"].to_dict()["mean"] == pytest.approx(1.0)
    res2 = match_neurons_by_layer(A, B, layers={"l2": "l1"})
    assert list(res2) == ["l2"]
    with pytest.raises(SimilarityInputError, match="share no layer"):
        match_neurons_by_layer(A, {"zz": acts()})
    with pytest.raises(SimilarityInputError, match="not found"):
        match_neurons_by_layer(A, B, layers=["l3"])
    with pytest.raises(SimilarityInputError, match="method"):
        neuron_correlation(A["l1"], B["l1"], method="kendall")
    with pytest.raises(SimilarityInputError, match="same samples"):
        match_neurons(acts(n=5), acts(n=6))


# ----------------------------------------------------------------- relative representations


def test_relative_representation_values():
    X = acts(n=6, p=3)
    anchors = X[[0, 2]]
    r = relative_representation(X, anchors)
    want = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (
        anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(r, want, atol=1e-12)
    assert r.shape == (6, 2)
    np.testing.assert_allclose(r[[0, 2], [0, 1]], 1.0)


def test_relative_similarity_invariances():
    rng = np.random.default_rng(4)
    X = acts(n=100, p=6)
    Q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    W = Q[:, :6].T  # isometric embedding R^6 -> R^9
    idx = np.arange(10)
    assert relative_similarity(X, 3.0 * X @ W, idx) == pytest.approx(1.0, abs=1e-12)
    # translation: only invariant with center=True
    assert relative_similarity(X, X @ W + 5.0, idx, center=True) == pytest.approx(1.0, abs=1e-12)
    assert relative_similarity(X, X @ W + 5.0, idx) < 0.9
    # unrelated representations are much less similar
    assert relative_similarity(X, acts(n=100, p=6, seed=9), idx) < 0.5


def test_relative_errors_and_zero_vectors():
    X = acts(n=10, p=3)
    with pytest.raises(SimilarityInputError, match="features"):
        relative_representation(X, np.ones((2, 4)))
    for bad in ([], [0, 0], [10], [[0, 1]], [0.5]):
        with pytest.raises(SimilarityInputError):
            relative_similarity(X, X, bad)
    Xz = X.copy()
    Xz[3] = 0.0
    with pytest.warns(DegenerateRepresentationWarning):
        r = relative_representation(Xz, X[:2])
    assert np.all(r[3] == 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relative_similarity(X, X, [1, 2])
