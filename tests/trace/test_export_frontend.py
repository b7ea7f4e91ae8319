"""The ``torch.export`` front end: same ComputationGraph contract as fx,
tied weights, errors naming the ATen op and module path, ``tracer=``
dispatch."""

import pytest
import torch
from torch import nn

import weightspace as ws
import zoo
from weightspace.core import analyze
from weightspace.errors import ConfigError, TraceError, UnsupportedOperationError
from weightspace.trace.export import trace_export

from tests.trace.tracekit import Between, DataDependent, NanoGPT, Wrapper, check_model


@pytest.mark.parametrize("flash", [False, True])
def test_nanogpt_export(flash):
    torch.manual_seed(0)
    m = NanoGPT(flash=flash)
    a, _ = check_model(m, m._clone, (torch.randint(0, 100, (2, 8)),), tracer="export")
    cg = a.computation_graph
    assert cg.fx_graph is None  # really the export front end
    assert any(op.startswith("aten.") for _, op in cg.ops)
    # tied lm_head / wte: one canonical tensor, acted on as embedding and as head
    assert cg.aliases["lm_head.weight"] == cg.aliases["transformer.wte.weight"]
    resid = next(g for g in a.spec.groups if any(ax.param == "transformer.h.0.ln_1.weight" for ax in g.axes))
    assert {("transformer.wte.weight", 1), ("lm_head.weight", 1)} <= {(ax.param, ax.axis) for ax in resid.axes}
    heads = [g for g in a.spec.groups if g.kind == "head"]
    assert len(heads) == 2 and all(g.size == 4 for g in heads)


def _group_key(spec):
    return sorted((g.size, g.kind, g.unit, tuple(sorted(g.axes))) for g in spec.groups)


@pytest.mark.parametrize("name", ["mlp", "cnn_small", "vit_tiny", "mobilenet_tiny"])
def test_fx_and_export_agree(name):
    m = zoo.create_model(name, seed=0)
    x = zoo.example_input(name)
    fx = analyze(m, x, tracer="fx")
    ex = analyze(m, x, tracer="export")
    assert _group_key(fx.spec) == _group_key(ex.spec)
    assert fx.spec.param_axes == ex.spec.param_axes
    assert [b.size for b in fx.spec.blocks] == [b.size for b in ex.spec.blocks]
    # and the same parameter graph: nodes, edges, edge types
    assert fx.template.num_nodes == ex.template.num_nodes
    assert torch.equal(fx.template.edge_index(), ex.template.edge_index())
    assert torch.equal(fx.template.edge_type(), ex.template.edge_type())


def Sorted():  # noqa: N802 - a model factory
    return Between(nn.Sequential(nn.Linear(4, 6)), lambda h: torch.sort(h, dim=-1).values, nn.Linear(6, 2))


def test_unsupported_aten_op_names_op_and_module():
    with pytest.raises(UnsupportedOperationError) as exc:
        trace_export(Sorted(), torch.randn(3, 4))
    msg = str(exc.value)
    assert "aten.sort" in msg and "register_aten_rule" in msg


def test_unsupported_aten_op_module_path():
    with pytest.raises(UnsupportedOperationError) as exc:
        trace_export(Wrapper("inner", Sorted()), torch.randn(3, 4))
    assert exc.value.module_path == "inner"
    assert "'inner'" in str(exc.value)


def test_both_front_ends_fail_names_both():
    with pytest.raises(TraceError) as exc:
        ws.permutation_spec(DataDependent(), torch.randn(2, 4))
    msg = str(exc.value)
    assert "torch.fx:" in msg and "torch.export:" in msg and "DataDependent" in msg


def test_unknown_tracer_is_config_error():
    with pytest.raises(ConfigError) as exc:
        ws.permutation_spec(DataDependent(), torch.randn(2, 4), tracer="jit")
    assert exc.value.field == "tracer" and "jit" in str(exc.value)


def test_mha_in_export_points_to_fx():
    m = zoo.create_model("token_transformer", seed=0)
    with pytest.raises(UnsupportedOperationError) as exc:
        trace_export(m, zoo.example_input("token_transformer"))
    assert "tracer='fx'" in str(exc.value)
    # auto picks fx, which has the module rule
    assert ws.permutation_spec(m, zoo.example_input("token_transformer"), tracer="auto").groups


def test_parameter_graph_with_export():
    torch.manual_seed(0)
    m = NanoGPT()
    x = torch.randint(0, 100, (2, 8))
    g = ws.parameter_graph(m, x, tracer="export")
    sd = g.to_state_dict()
    assert {"transformer.h.0.mlp.c_fc.weight", "lm_head.weight"} <= set(sd)
    for k, v in m.state_dict().items():
        if k in sd:
            assert torch.equal(sd[k], v), k


class GQA(nn.Module):
    """Grouped-query attention through SDPA's enable_gqa (4 q heads, 2 k/v heads)."""

    def __init__(self, e=16, h=4, kvh=2):
        super().__init__()
        self.h, self.kvh, self.d = h, kvh, e // h
        self.q = nn.Linear(e, e)
        self.kv = nn.Linear(e, 2 * kvh * self.d)
        self.o = nn.Linear(e, e)
        self.fc = nn.Linear(e, 24)
        self.out = nn.Linear(24, 3)

    def forward(self, x):
        b, t, e = x.shape
        q = self.q(x).view(b, t, self.h, self.d).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2 * self.kvh, self.d).transpose(1, 2).chunk(2, dim=1)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, e))
        return self.out(torch.relu(self.fc(x)))


def test_sdpa_enable_gqa_fixes_heads():
    torch.manual_seed(0)
    a, _ = check_model(GQA(), GQA, (torch.randn(2, 5, 16),), tracer="export")
    spec = a.spec
    assert not any(g.kind == "head" for g in spec.groups)
    # the residual stream is tied to the (fixed) input; q/k/v/o stay fixed; the MLP is free
    assert sorted(g.size for g in spec.groups) == [24]


def test_graph_template_and_parameter_graph_take_tracer():
    from weightspace.core import graph_template

    fx = graph_template("cnn_small", tracer="fx")
    ex = graph_template("cnn_small", tracer="export")
    assert fx is not ex  # cached per tracer
    assert torch.equal(fx.edge_index(), ex.edge_index())
    sd = zoo.create_model("cnn_small", seed=3).state_dict()
    g = ws.parameter_graph(sd, arch="cnn_small", tracer="export")
    assert all(torch.equal(g.to_state_dict()[k], v) for k, v in sd.items() if v.is_floating_point())
