"""Weight-statistics features: known values, and invariance under the spec's
permutations on several registered architectures (with controls showing the
permutations are not vacuous and the features do react to real changes)."""

import numpy as np
import pytest
import torch

import weightspace as ws
import zoo
from weightspace.predict import (
    SPECTRAL_STATS, STATS, feature_names, layout_difference, network_layout,
    spectral_statistics, tensor_statistics, weight_features,
)
from weightspace.symmetry import apply_permutation, random_permutation

# convs + linear, 1-d convs, grouped/depthwise + concat + flatten + norms, residual, attention heads
ARCHS = [
    ("cnn_small", {}),
    ("cnn1d", {}),
    ("mobilenet_tiny", {}),
    ("resnet20", {"width": 1}),
    ("vit_tiny", {}),
]


def _state(name, kw, seed=0):
    """Default init, with random biases / norm stats so every tensor varies."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in zoo.create_model(name, seed=seed, **kw).state_dict().items():
        if v.is_floating_point() and (k.endswith("bias") or "running" in k or "token" in k):
            sd[k] = torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.1
        else:
            sd[k] = v
    return sd


@pytest.mark.parametrize("name,kw", ARCHS, ids=[a for a, _ in ARCHS])
def test_features_invariant_under_spec_permutations(name, kw):
    spec = ws.permutation_spec(name, **kw)
    sd = _state(name, kw)
    X0, layout = weight_features([sd], spectral=True)
    for seed in (1, 2):
        perm = random_permutation(spec, seed=seed)
        sdp = apply_permutation(sd, spec, perm)
        # control: the permutation really moves values around
        assert any(not torch.equal(sd[k], sdp[k]) for k in sd if sd[k].is_floating_point())
        Xp, layout_p = weight_features([sdp], spectral=True)
        assert layout_p == layout
        np.testing.assert_allclose(Xp, X0, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,kw", ARCHS[:2], ids=[a for a, _ in ARCHS[:2]])
def test_features_react_to_real_changes(name, kw):
    """Not permutation invariant because constant: a non-permutation change
    (one weight moved to another tensor's scale) changes the features."""
    sd = _state(name, kw)
    X0, _ = weight_features([sd], spectral=True)
    k = next(k for k, v in sd.items() if v.dim() >= 2)
    sd2 = dict(sd)
    sd2[k] = sd[k].clone()
    sd2[k].view(-1)[0] += 1.0
    X1, _ = weight_features([sd2], spectral=True)
    changed = [n for n, a, b in zip(feature_names(network_layout(sd), spectral=True), X0[0], X1[0]) if a != b]
    assert changed and all(n.startswith(k + ".") for n in changed)


def test_graph_and_state_dict_give_the_same_features():
    sd = _state("cnn_small", {})
    g = ws.parameter_graph(sd, arch="cnn_small")
    Xs, ls = weight_features([sd], spectral=True)
    Xg, lg = weight_features([g], spectral=True)
    assert ls == lg
    np.testing.assert_array_equal(Xs, Xg)


def test_tensor_statistics_known_values():
    v = np.array([[1.0, -2.0, 3.0, 4.0, -5.0]])
    got = tensor_statistics(v)[0]
    want = dict(mean=0.2, var=np.var(v), q0=-5.0, q25=-2.0, q50=1.0, q75=3.0, q100=4.0, l1=15.0, l2=np.sqrt(55.0))
    assert list(STATS) == list(want)
    np.testing.assert_allclose(got, list(want.values()))


def test_spectral_statistics_match_torch_svd():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64)  # read as 3 x 40
    s = torch.linalg.svdvals(w.reshape(3, -1)).numpy()
    got = spectral_statistics(w.reshape(1, -1).numpy(), w.shape)[0]
    p = s / s.sum()
    want = [s.max(), s.min(), s.mean(), (s**2).sum() / s.max() ** 2, np.exp(-(p * np.log(p)).sum())]
    assert len(want) == len(SPECTRAL_STATS)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_feature_names_match_columns():
    sd = _state("cnn_small", {})
    for spectral in (False, True):
        X, layout = weight_features([sd, sd], spectral=spectral)
        names = feature_names(layout, spectral=spectral)
        assert X.shape == (2, len(names)) and len(set(names)) == len(names)
        n2d = sum(len(s) >= 2 for _, s in layout)
        assert len(names) == len(layout) * len(STATS) + spectral * n2d * len(SPECTRAL_STATS)


def test_nonfinite_tensor_gives_nan_for_that_tensor_only():
    sd = _state("cnn_small", {})
    k = "features.0.bias"
    sd[k] = sd[k].clone()
    sd[k][0] = float("nan")
    X, layout = weight_features([sd], spectral=True)
    names = feature_names(layout, spectral=True)
    nan = {n for n, v in zip(names, X[0]) if np.isnan(v)}
    assert nan == {f"{k}.{s}" for s in STATS}


def test_mixed_architectures_are_an_error():
    a = _state("cnn_small", {})
    b = _state("cnn_small", {"width": 8})
    with pytest.raises(ValueError, match="different architecture"):
        weight_features([a, b])
    assert "features.0.weight" in layout_difference(network_layout(a), network_layout(b))


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        weight_features([])
    with pytest.raises(TypeError, match="ParameterGraph or a state_dict"):
        weight_features([np.zeros(3)])
    with pytest.raises(TypeError, match="torch tensors"):
        weight_features([{"w": np.zeros(3)}])
    with pytest.raises(ValueError, match=r"\[n, k\]"):
        tensor_statistics(np.zeros(3))


def test_tensor_layout_and_its_deprecated_old_name():
    import weightspace.predict.features as f

    assert "Layout" not in f.__all__ and "TensorLayout" in f.__all__
    with pytest.warns(DeprecationWarning, match="TensorLayout"):
        assert f.Layout is f.TensorLayout
    with pytest.raises(AttributeError):
        f.NoSuchName  # noqa: B018
