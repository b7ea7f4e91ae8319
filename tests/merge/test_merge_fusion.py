"""OT fusion: exact OT of identical (or permuted) models returns the model;
heterogeneous widths give valid models; duplicated neurons are transported
without changing the function."""

import pytest
import torch

import weightspace as ws
import zoo
from tests.merge.helpers import analysis, perturbed
from weightspace.merge import MergeError, ot_fusion
from weightspace.symmetry import apply_permutation, random_permutation


@pytest.mark.parametrize("arch", ["mlp", "cnn_small", "resnet20", "vit_tiny", "mobilenet_tiny"])
def test_exact_ot_of_a_model_and_its_permutation_returns_the_model(arch):
    a = analysis(arch)
    sd = perturbed(a.module.state_dict(), 1)
    sd_b = apply_permutation(sd, a.spec, random_permutation(a.spec, seed=2))
    res = ot_fusion([sd, sd_b], a.spec, solver="emd")
    bad = [k for k in sd if not torch.equal(res.state_dict[k], sd[k])]
    assert not bad, bad[:5]
    for T in res.transports[1].values():  # every plan is a (scaled) permutation
        assert torch.equal(torch.as_tensor(T > 0).sum(0), torch.ones(T.shape[1], dtype=torch.long))


def test_exact_ot_with_activation_ground_metric_returns_the_model():
    a = analysis("cnn_small")
    sd = perturbed(a.module.state_dict(), 3)
    sd_b = apply_permutation(sd, a.spec, random_permutation(a.spec, seed=4))
    mods = []
    for s in (sd, sd_b):
        m = zoo.create_model("cnn_small")
        m.load_state_dict(s)
        mods.append(m)
    x = zoo.example_input("cnn_small", batch_size=32, seed=1)
    res = ot_fusion([sd, sd_b], a.spec, ground="activations", models=mods, data=x)
    assert res.info["fallback_groups"] == []
    assert all(torch.equal(res.state_dict[k], sd[k]) for k in sd)


def test_sinkhorn_transport_has_uniform_marginals_and_is_soft():
    a = analysis("mlp")
    sd_a = zoo.create_model("mlp", seed=1).state_dict()
    sd_b = zoo.create_model("mlp", seed=2).state_dict()
    res = ot_fusion([sd_a, sd_b], a.spec, solver="sinkhorn", reg=0.5)
    T = torch.as_tensor(res.transports[1]["layers.0"])
    assert torch.allclose(T.sum(1), torch.full((64,), 1 / 64, dtype=T.dtype), atol=1e-4)
    assert (T > 1e-6).sum() > 64  # entropic: not a permutation


def _widen_mlp(sd, factor=2):
    """An exact function-preserving widening of a 64-64 MLP: every hidden neuron
    duplicated ``factor`` times, its outgoing weights divided by ``factor``."""
    out = dict(sd)
    w0, b0, w1, b1, w2 = (sd[k] for k in ("layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias", "layers.4.weight"))
    rep = lambda t, d: t.repeat_interleave(factor, dim=d)  # noqa: E731
    out["layers.0.weight"], out["layers.0.bias"] = rep(w0, 0), rep(b0, 0)
    out["layers.2.weight"], out["layers.2.bias"] = rep(rep(w1, 0), 1) / factor, rep(b1, 0)
    out["layers.4.weight"] = rep(w2, 1) / factor
    return out


@pytest.mark.parametrize("target", [0, 1])
def test_heterogeneous_widths_duplicated_neurons_preserve_the_function(target):
    narrow = zoo.create_model("mlp", seed=3)
    sd_n = perturbed(narrow.state_dict(), 3)
    sd_w = _widen_mlp(sd_n)
    spec_n, spec_w = ws.permutation_spec("mlp"), ws.permutation_spec("mlp", hidden=(128, 128))
    res = ot_fusion([sd_n, sd_w], [spec_n, spec_w], target=target)
    kw = {} if target == 0 else {"hidden": (128, 128)}
    m_ref = zoo.create_model("mlp", **kw)
    m_ref.load_state_dict(sd_n if target == 0 else sd_w)
    m_fused = zoo.create_model("mlp", **kw)
    m_fused.load_state_dict(res.state_dict)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(m_fused(x), m_ref(x), atol=1e-5)
    T = torch.as_tensor(res.transports[1 - target]["layers.0"])
    assert T.shape == ((64, 128) if target == 0 else (128, 64))


@pytest.mark.parametrize(
    "arch,kw_a,kw_b",
    [
        ("mlp", {}, {"hidden": (32, 48)}),
        ("cnn_small", {}, {"width": 40}),
        ("resnet20", {"in_channels": 1, "image_size": 8}, {"in_channels": 1, "image_size": 8, "width": 2}),
        ("vit_tiny", {}, {"mlp_ratio": 3.0}),
        ("mobilenet_tiny", {}, {"width": 8}),
    ],
)
def test_heterogeneous_widths_give_valid_models(arch, kw_a, kw_b):
    sa, sb = ws.permutation_spec(arch, **kw_a), ws.permutation_spec(arch, **kw_b)
    sd_a = zoo.create_model(arch, seed=1, **kw_a).state_dict()
    sd_b = zoo.create_model(arch, seed=2, **kw_b).state_dict()
    x = zoo.example_input(arch, batch_size=4, **kw_a)
    for target, kw in ((0, kw_a), (1, kw_b)):
        res = ot_fusion([sd_a, sd_b], [sa, sb], target=target)
        m = zoo.create_model(arch, **kw)
        m.load_state_dict(res.state_dict, strict=True)  # right keys and shapes
        with torch.no_grad():
            out = m.eval()(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_head_count_mismatch_is_a_clear_error():
    sa, sb = ws.permutation_spec("vit_tiny"), ws.permutation_spec("vit_tiny", num_heads=2)
    sd_a = zoo.create_model("vit_tiny", seed=1).state_dict()
    sd_b = zoo.create_model("vit_tiny", seed=2, num_heads=2).state_dict()
    with pytest.raises(MergeError, match="head"):
        ot_fusion([sd_a, sd_b], [sa, sb])
