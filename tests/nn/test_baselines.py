"""Baselines: statistics, NFN/DWS-style equivariant layer, flat MLP."""

from __future__ import annotations

import math

import pytest
import torch

from tests.nn.helpers import graph_and_permuted
from weightspace.nn import NFN, FlatMLP, NPLinear, StatNN, mlp_layers, weight_statistics

TOL = 1e-4


@pytest.mark.parametrize("arch", ["mlp", "siren"])
def test_nfn_is_invariant(arch):
    g, gp, _ = graph_and_permuted(arch)
    torch.manual_seed(0)
    m = NFN.for_template(g.template, out_dim=2, hidden=8).eval()
    m.fit_normalization([g, gp])
    with torch.no_grad():
        y, yp = m.predict(m.collate([g])), m.predict(m.collate([gp]))
    assert float((y - yp).abs().max()) <= TOL
    assert float(y.abs().max()) > 0


def test_np_linear_is_equivariant_and_not_invariant():
    """Permuting hidden neuron j of layer l permutes row j of W_l, column j of
    W_{l+1} and entry j of b_l; the layer output moves the same way."""
    sizes = [5, 7, 6, 3]
    gen = torch.Generator().manual_seed(0)
    B, C = 2, 3
    ws = [torch.randn(B, sizes[i + 1], sizes[i], C, generator=gen) for i in range(3)]
    bs = [torch.randn(B, sizes[i + 1], C, generator=gen) for i in range(3)]
    perms = [torch.randperm(n, generator=gen) for n in sizes[1:-1]]

    def permute(ws, bs):
        ws, bs = list(ws), list(bs)
        for l, p in enumerate(perms):  # hidden layer l+1 = output of weight l
            ws[l] = ws[l][:, p]
            bs[l] = bs[l][:, p]
            ws[l + 1] = ws[l + 1][:, :, p]
        return ws, bs

    torch.manual_seed(0)
    layer = NPLinear(sizes, C, 4)
    with torch.no_grad():
        out_w, out_b = layer(ws, bs)
        pw, pb = layer(*permute(ws, bs))
        ew, eb = permute(out_w, out_b)
    for a, b in zip(pw + pb, ew + eb):
        assert float((a - b).abs().max()) <= 1e-5
    # the output does change (the layer is equivariant, not invariant)
    assert float((pw[0] - out_w[0]).abs().max()) > 1e-3


def test_nfn_rejects_non_mlp():
    g, _, _ = graph_and_permuted("cnn_small")
    with pytest.raises(ValueError, match="NFN"):
        mlp_layers(g)


def test_weight_statistics_values():
    g, _, _ = graph_and_permuted("mlp")
    s = weight_statistics(g)
    assert s.shape == (len(g.template.keys), 7)
    w = g.to_state_dict()[g.template.keys[0]].double()
    assert torch.allclose(s[0, 0].double(), w.mean(), atol=1e-6)
    assert torch.allclose(s[0, 2].double(), w.min(), atol=1e-6)
    assert torch.allclose(s[0, 6].double(), w.max(), atol=1e-6)


def test_baselines_pad_and_validate_widths():
    g_small, _, _ = graph_and_permuted("siren")
    g_big, _, _ = graph_and_permuted("mlp")
    m = StatNN.for_template(g_big.template)
    x = m.collate([g_small, g_big])  # fewer tensors -> zero padded
    assert x.shape == (2, 7 * len(g_big.template.keys))
    with pytest.raises(ValueError, match="in_features"):
        FlatMLP.for_template(g_small.template).collate([g_big])


def test_weight_statistics_is_the_feature_statistics_and_matches_the_old_torch_version():
    from weightspace.predict import STATS, weight_features

    g, _, _ = graph_and_permuted("cnn_small")
    s = weight_statistics(g)
    t = g.template
    qs = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    for i, k in enumerate(t.keys):  # the torch computation weight_statistics used before
        v = g.values[t.offsets[k] : t.offsets[k] + math.prod(t.shapes[k])].double()
        var = v.var(unbiased=False) if v.numel() > 1 else v.new_zeros(())
        ref = torch.cat([v.mean()[None], var[None], torch.quantile(v, qs)]).float()
        torch.testing.assert_close(s[i], ref, rtol=1e-6, atol=1e-7)
    X, layout = weight_features([g])
    per_tensor = torch.from_numpy(X.reshape(len(layout), len(STATS))[:, :7]).float()
    assert torch.equal(per_tensor, s)
