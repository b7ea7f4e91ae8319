"""Streaming accumulators: exact linear CKA over batches and minibatch CKA."""

import numpy as np
import pytest
import torch

from weightspace.similarity import (
    DegenerateRepresentationWarning,
    LinearCKAAccumulator,
    MinibatchCKAAccumulator,
    SimilarityInputError,
    cka_matrix,
    hsic,
    linear_cka,
    minibatch_cka,
)


def data(n=120, p=7, q=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = np.tanh(X @ rng.normal(size=(p, q))) + 0.3 * rng.normal(size=(n, q))
    return X, Y


def split(n, sizes):
    out, i = [], 0
    for s in sizes:
        out.append(slice(i, i + s))
        i += s
    assert i == n
    return out


def test_linear_accumulator_equals_full_data_with_uneven_batches_and_offsets():
    X, Y = data()
    X = X + 1e6  # large common offset: the shifted Chan update keeps precision
    acc = LinearCKAAccumulator()
    for sl in split(120, [1, 7, 50, 2, 60]):
        acc.update(X[sl], torch.tensor(Y[sl], dtype=torch.float64))
    assert acc.n_samples == 120 and acc.n_batches == 5
    assert acc.result().values[0, 0] == pytest.approx(linear_cka(X - 1e6, Y), rel=1e-9)


def test_linear_accumulator_layer_dicts_and_self_comparison():
    X, Y = data(n=90)
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(90, 3))
    A = {"x": X, "z": Z}
    B = {"y": Y, "x2": X[:, :4]}
    acc = LinearCKAAccumulator()
    self_acc = LinearCKAAccumulator()
    for sl in split(90, [30, 30, 29, 1]):
        acc.update({k: v[sl] for k, v in A.items()}, {k: v[sl] for k, v in B.items()})
        self_acc.update({k: v[sl] for k, v in A.items()})
    np.testing.assert_allclose(acc.result().values, cka_matrix(A, B).values, rtol=1e-10)
    res = self_acc.result()
    np.testing.assert_allclose(res.values, cka_matrix(A).values, rtol=1e-10, atol=1e-14)
    assert res.layers_a == res.layers_b == ("x", "z")


def test_linear_accumulator_constant_layer():
    X, _ = data(n=20)
    acc = LinearCKAAccumulator()
    for sl in split(20, [10, 10]):
        acc.update({"c": np.full((10, 3), 0.7), "x": X[sl]})
    with pytest.warns(DegenerateRepresentationWarning):
        v = acc.result().values
    assert v[0, 0] == 0.0 and v[0, 1] == 0.0 and v[1, 1] == pytest.approx(1.0)


def test_linear_accumulator_errors():
    acc = LinearCKAAccumulator()
    with pytest.raises(SimilarityInputError, match="update"):
        acc.result()
    acc.update(np.ones((1, 3)), np.ones((1, 2)))
    with pytest.raises(SimilarityInputError, match=">= 2 samples"):
        acc.result()
    with pytest.raises(SimilarityInputError, match="changed"):
        acc.update(np.ones((2, 4)), np.ones((2, 2)))
    with pytest.raises(SimilarityInputError, match="same samples"):
        acc.update(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(SimilarityInputError, match="MiB"):
        LinearCKAAccumulator(max_bytes=1000).update(np.ones((2, 20)), np.ones((2, 20)))
    with pytest.raises(SimilarityInputError, match="non-finite"):
        LinearCKAAccumulator().update(np.full((2, 2), np.nan), np.ones((2, 2)))


def test_minibatch_single_batch_equals_unbiased_cka():
    X, Y = data(n=50)
    v = MinibatchCKAAccumulator().update(X, Y).result()
    assert v.values[0, 0] == pytest.approx(linear_cka(X, Y, unbiased=True), rel=1e-10)
    assert v.unbiased and v.method == "minibatch"


def test_minibatch_equals_definition_over_batches():
    X, Y = data(n=120)
    sls = split(120, [40, 40, 4, 36])
    num = sum(hsic(X[s] @ X[s].T, Y[s] @ Y[s].T, unbiased=True) for s in sls)
    dx = sum(hsic(X[s] @ X[s].T, X[s] @ X[s].T, unbiased=True) for s in sls)
    dy = sum(hsic(Y[s] @ Y[s].T, Y[s] @ Y[s].T, unbiased=True) for s in sls)
    got = minibatch_cka((X[s], Y[s]) for s in sls)
    assert got == pytest.approx(num / np.sqrt(dx * dy), rel=1e-9)


def test_minibatch_matrix_equals_pairwise_and_self_mode():
    X, Y = data(n=64)
    Z = np.random.default_rng(2).normal(size=(64, 9))
    A, B = {"x": X, "z": Z}, {"y": Y, "x": X}
    acc, self_acc = MinibatchCKAAccumulator(), MinibatchCKAAccumulator()
    for s in split(64, [32, 32]):
        acc.update({k: v[s] for k, v in A.items()}, {k: v[s] for k, v in B.items()})
        self_acc.update({k: v[s] for k, v in A.items()})
    m = acc.result()
    for i, ka in enumerate(A):
        for j, kb in enumerate(B):
            want = minibatch_cka((A[ka][s], B[kb][s]) for s in split(64, [32, 32]))
            assert m.values[i, j] == pytest.approx(want, rel=1e-10)
    assert m["x", "x"] == pytest.approx(1.0)
    sm = self_acc.result().values
    np.testing.assert_allclose(np.diag(sm), 1.0)
    np.testing.assert_allclose(sm, sm.T)


def test_minibatch_close_to_full_data_unbiased_cka_for_large_batches():
    X, Y = data(n=4000, seed=3)
    full = linear_cka(X, Y, unbiased=True)
    mb = minibatch_cka((X[i : i + 1000], Y[i : i + 1000]) for i in range(0, 4000, 1000))
    assert mb == pytest.approx(full, abs=0.02)


def test_minibatch_needs_four_samples_per_batch():
    with pytest.raises(SimilarityInputError, match="at least 4"):
        MinibatchCKAAccumulator().update(np.ones((3, 2)), np.ones((3, 2)))


def test_minibatch_constant_layer_is_zero_with_warning():
    X, _ = data(n=16)
    acc = MinibatchCKAAccumulator().update({"c": np.zeros((16, 2)), "x": X})
    with pytest.warns(DegenerateRepresentationWarning):
        v = acc.result().values
    assert v[0, 1] == 0.0 and np.isfinite(v).all()


def test_minibatch_is_translation_invariant():
    X, Y = data(n=40)
    a = minibatch_cka([(X[:20], Y[:20]), (X[20:], Y[20:])])
    b = minibatch_cka([(X[:20] + 50, Y[:20]), (X[20:] - 50, Y[20:])])
    assert a == pytest.approx(b, rel=1e-9)


def test_float32_batches_accumulate_in_float64():
    X, Y = data(n=100)
    X32, Y32 = X.astype(np.float32) + np.float32(1e3), torch.tensor(Y, dtype=torch.float32)
    want = linear_cka(X32.astype(np.float64), Y32.double().numpy())
    acc, mb = LinearCKAAccumulator(), MinibatchCKAAccumulator()
    for s in split(100, [50, 50]):
        acc.update(X32[s], Y32[s])
        mb.update(X32[s], Y32[s])
    assert acc.result().values[0, 0] == pytest.approx(want, rel=1e-10)
    ref = minibatch_cka((X32[s].astype(np.float64), Y32[s].double().numpy()) for s in split(100, [50, 50]))
    assert mb.result().values[0, 0] == pytest.approx(ref, rel=1e-9)
