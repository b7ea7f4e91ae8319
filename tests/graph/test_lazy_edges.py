"""Lazy edge sets: build_template describes dense tensors' edges (node pairs
and a view of the values) and writes them only on request."""

import pytest
import torch
from torch import nn

import weightspace as ws
import zoo
from weightspace.errors import NonFiniteWeightsError
from tests.hf_models import build

NAMES = ("mlp", "cnn_small", "vit_tiny", "mobilenet_tiny")


def _graph(model, x):
    a = ws.analyze(model, x)
    return a.template.graph(model.state_dict())


def _model(name):
    if name in NAMES:
        return zoo.create_model(name, seed=0), zoo.example_input(name)
    pytest.importorskip("transformers")
    make, x = build(name)
    return make(0).eval(), x


@pytest.mark.parametrize("name", NAMES + ("gpt2", "llama"))
def test_lazy_sets_equal_their_materialised_form(name):
    model, x = _model(name)
    g = _graph(model, x)
    t = g.template
    # the graph is ready without any [E] edge tensor
    assert all(s._src is None and s._pos is None for s in t.edge_sets if s.nodes is not None)
    assert any(s.nodes is not None for s in t.edge_sets)
    ei, ev = t.edge_index(), g.edge_values()
    assert all(s._src is None for s in t.edge_sets if s.nodes is not None)  # written in place, not cached per set
    # ... and equal to the per-set tensors built on access
    assert torch.equal(ei[0], torch.cat([s.src for s in t.edge_sets]))
    assert torch.equal(ei[1], torch.cat([s.dst for s in t.edge_sets]))
    assert torch.equal(ev, torch.cat([g.values[s.pos].reshape(-1) for s in t.edge_sets if s.pos is not None]))
    assert all(s.pos.shape == (s.num_edges, s.width) for s in t.edge_sets if s.pos is not None)
    assert int(t.edge_width().sum()) == ev.numel() == t.num_values
    # every value sits on exactly one edge
    pos = torch.cat([s.pos.reshape(-1) for s in t.edge_sets if s.pos is not None])
    assert torch.equal(pos.sort().values, torch.arange(t.num_values))
    # write-back through the views is exact
    back = g.with_edge_values(ev * 2).to_state_dict()
    sd = g.to_state_dict()
    assert all(torch.equal(back[k], 2 * v) for k, v in sd.items() if v.is_floating_point())


def test_transposed_storage_reads_edges_out_by_in():
    # HF GPT-2's Conv1D stores (in, out): edge (o, i) must carry W[i, o]
    pytest.importorskip("transformers")
    make, x = build("gpt2")
    model = make(0).eval()
    g = _graph(model, x)
    t = g.template
    key = "transformer.h.0.attn.c_attn.weight"
    s = next(s for s in t.edge_sets if s.name == key)
    w = model.state_dict()[key]
    n_in, n_out = w.shape
    assert (s.num_edges, s.width) == (n_in * n_out, 1)
    vals = g.values[s.pos].view(n_out, n_in)
    assert torch.equal(vals, w.T)
    src, dst = s.src.view(n_out, n_in), s.dst.view(n_out, n_in)
    assert torch.equal(src, src[:1].expand(n_out, n_in)) and torch.equal(dst, dst[:, :1].expand(n_out, n_in))
    assert src[0].unique().numel() == n_in and dst[:, 0].unique().numel() == n_out


def test_linear_edges_carry_their_weight():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    g = _graph(m, torch.randn(1, 3))
    t, ei, ev = g.template, g.template.edge_index(), g.edge_values()
    s0 = t.edge_sets[0]
    assert s0.name == "0.weight" and s0.num_edges == 12
    w = m[0].weight
    for e in range(12):  # inputs are fixed neurons: node_pos is the input index
        j = int(t.node_pos[ei[0, e]])
        o = e // 3
        assert ev[e] == w[o, j]
    assert torch.equal(ei[1, :12].view(4, 3)[:, 0].unique(), ei[1, :12].unique())


def test_finite_check_survives_an_overflowing_sum():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(2, 2))
    a = ws.analyze(m, torch.randn(1, 2))
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["0.weight"].fill_(3e38)  # finite; their float32 sum is inf
    assert torch.equal(a.template.graph(sd).to_state_dict()["0.weight"], sd["0.weight"])
    for bad in (float("nan"), float("inf")):
        sd2 = {k: v.clone() for k, v in sd.items()}
        sd2["0.bias"][1] = bad
        with pytest.raises(NonFiniteWeightsError, match="0.bias"):
            a.template.graph(sd2)
    sd3 = {k: v.clone() for k, v in m.state_dict().items()}
    sd3["0.weight"][0, 0], sd3["0.weight"][1, 1] = float("inf"), float("-inf")  # sum is nan
    with pytest.raises(NonFiniteWeightsError, match="0.weight"):
        a.template.graph(sd3)
