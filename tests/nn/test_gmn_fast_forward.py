"""The GMN's optimized forward (fused encoders, embedding_bag kernels, the
layer norm folded into the edge GEMM without autograd) computes the same
function as the plain formulation it replaced: a reference written here with
padded edge tables, indexing and ``index_add`` / ``index_reduce``, one op at a
time, on the same parameters. float64, 1e-6."""

from __future__ import annotations

import math

import pytest
import torch

from tests.nn.helpers import graph_and_permuted
from tests.perturb import perturb_
from weightspace.graph import pad_edge_values
from weightspace.nn import GMN, collate

TOL = 1e-6
pytestmark = pytest.mark.filterwarnings("ignore:index_reduce:UserWarning")


def _reduce(m: torch.Tensor, index: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """Per-node ``how`` of the rows of ``m`` with that node in ``index`` (0 where none)."""
    if how == "sum":
        return m.new_zeros(n, m.shape[1]).index_add(0, index, m)
    deg = torch.bincount(index, minlength=n).to(m.dtype).clamp(min=1)[:, None]
    if how == "mean":
        return _reduce(m, index, n, "sum") / deg
    if how == "var":
        mean = _reduce(m, index, n, "mean")
        return _reduce(m * m, index, n, "mean") - mean * mean
    return m.new_zeros(n, m.shape[1]).index_reduce(0, index, m, "amax" if how == "max" else "amin",
                                                   include_self=False)


def _aggregate(conv, m, index, n):
    hows = {"sum": ["sum"], "mean": ["mean"], "max": ["max"], "pna": ["mean", "min", "max", "var"]}[conv.aggr_name]
    outs = [_reduce(m, index, n, h) for h in hows]
    if conv.aggr_name == "pna":
        std = outs[3].clamp(min=1e-5).sqrt()
        outs[3] = std.masked_fill(std <= math.sqrt(1e-5), 0.0)
    return torch.cat(outs, dim=1)


def reference_forward(model: GMN, batch):
    """``(graph, node, edge)`` outputs of ``model`` on ``batch``, computed the
    plain way (the formulation before issue 17's kernels)."""
    hp = model.hparams
    src, dst = batch.edge_index
    n, B, F = batch.num_nodes, batch.num_graphs, batch.width
    din = torch.bincount(dst, minlength=n).to(batch.dtype)
    dout = torch.bincount(src, minlength=n).to(batch.dtype)
    log_deg = torch.stack([din, dout], 1).log1p()
    # nodes
    x = model.node_type_emb(batch.node_type) + model.role_emb(batch.node_role.clamp(0, hp["max_roles"] - 1))
    x = x + model.pos_emb(torch.where(batch.node_pos >= 0, batch.node_pos.clamp(max=hp["max_pos"] - 1) + 1, 0))
    if model.layer_emb is not None:
        x = x + model.layer_emb(batch.node_layer.clamp(0, hp["max_layers"] - 1))
    if model.depth_lin is not None:
        d = batch.node_depth[:, None]
        k = torch.arange(1, 5, dtype=d.dtype)[None, :] * math.pi
        x = x + model.depth_lin(torch.cat([d, torch.sin(k * d), torch.cos(k * d)], 1))
    x = x + model.deg_lin(log_deg)
    if model.extra_lin is not None:
        x = x + model.extra_lin(batch.node_extra)
    # edges: the padded [E, F] table
    attr, mask = pad_edge_values(batch.edge_values, batch.edge_width, F)
    mask = mask.to(attr.dtype)
    attr = attr * mask / model.edge_scale[batch.edge_type][:, None]
    e = model.edge_type_emb(batch.edge_type) + attr @ model.edge_val.weight[:, :F].t()
    e = e + mask @ model.edge_mask_lin.weight[:, :F].t()
    u = model.u0.expand(B, -1)
    for conv in model.convs:
        xn, en, un = conv.node_norm(x), conv.edge_norm(e), conv.glob_norm(u)
        pre = (xn[src] @ conv.lin_src.weight.t() + xn[dst] @ conv.lin_dst.weight.t() + conv.lin_edge(en)
               + un[batch.edge_batch] @ conv.lin_glob.weight.t())
        e = e + conv.edge_out(conv.edge_act(pre))
        m_in, m_out = _aggregate(conv, e, dst, n), _aggregate(conv, e, src, n)
        x = x + conv.node_mlp(torch.cat([xn, m_in, m_out, un[batch.node_batch], log_deg], 1))
        pooled = _reduce(torch.cat([x, m_in], 1), batch.node_batch, B, "mean")
        u = u + conv.glob_mlp(torch.cat([un, pooled], 1))
    graph = node = edge = None
    if model.graph_head is not None:
        pool = hp["pool"]
        graph = model.graph_head(torch.cat([u, _reduce(x, batch.node_batch, B, pool),
                                            _reduce(e, batch.edge_batch, B, pool)], 1))
    if model.node_head is not None:
        node = model.node_head(x)
    if model.edge_head is not None:
        edge = model.edge_head(e)
        if hp["edge_residual"]:
            raw = pad_edge_values(batch.edge_values, batch.edge_width, F)[0]  # unscaled input values
            edge = edge + torch.nn.functional.pad(raw, (0, edge.shape[1] - F))
    return graph, node, edge


def _randomize_(model: GMN, seed: int) -> GMN:
    """Non-default norm affines, biases, u0 and BatchNorm statistics (the
    defaults 1 / 0 would hide a folded scale or shift)."""
    return perturb_(model, seed, scale=0.2, mean_scale=0.3)


CASES = [
    dict(aggr="sum", norm="layer", act="silu", pool="mean"),
    dict(aggr="pna", norm="layer", act="gelu", pool="max", layer_encoding="depth"),
    dict(aggr="mean", norm="batch", act="relu", pool="sum", layer_encoding="embedding"),
    dict(aggr="max", norm="none", act="tanh", pool="mean"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "autograd"])
def test_optimized_forward_equals_the_plain_formulation(case, grad):
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp", "vit_tiny")]
    torch.manual_seed(0)
    width = max(g.template.max_width for g in graphs)
    model = GMN(out_dim=3, hidden=16, num_layers=2, node_out=2, edge_out=width + 1, edge_dim=width + 2,
                **case).fit_normalization(graphs)
    model = _randomize_(model.double(), seed=1).eval()
    b = collate(graphs, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out = model(b)
    with torch.no_grad():
        ref = reference_forward(model, collate(graphs, dtype=torch.float64))
    for name, r in zip(("graph", "node", "edge"), ref):
        o = getattr(out, name)
        assert o.shape == r.shape
        diff = float((o.detach() - r).abs().max())
        assert diff <= TOL * max(1.0, float(r.abs().max())), f"{name}: {diff}"


def test_optimized_forward_equals_the_plain_formulation_with_edge_residual_and_extras():
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp")]
    width = max(g.template.max_width for g in graphs)
    torch.manual_seed(0)
    model = GMN(out_dim=0, hidden=8, num_layers=3, edge_out=width, edge_dim=width, edge_residual=True,
                extra_dim=3)
    model = _randomize_(model.double(), seed=2).eval()
    gen = torch.Generator().manual_seed(3)
    extra = [torch.randn(g.num_nodes, 3, generator=gen, dtype=torch.float64) for g in graphs]
    with torch.no_grad():
        out = model(collate(graphs, node_extra=extra, dtype=torch.float64))
        _, _, ref = reference_forward(model, collate(graphs, node_extra=extra, dtype=torch.float64))
    assert out.graph is None and out.node is None
    assert float((out.edge - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


def test_value_layout_from_templates_equals_the_computed_one():
    """The per-template value keys (a batch holding its graphs) equal those
    computed from the batch alone (keep_graphs=False / a PyG batch), and
    locate every value: key // T is its column within its edge."""
    from weightspace.graph import EDGE_TYPES

    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp", "vit_tiny")]
    a, b = collate(graphs).value_layout(), collate(graphs, keep_graphs=False).value_layout()
    assert torch.equal(a["value_key"], b["value_key"]) and torch.equal(a["value_start"], b["value_start"])
    batch = collate(graphs, padded=True)
    attr, mask = batch.padded()
    T = len(EDGE_TYPES)
    edge = torch.repeat_interleave(torch.arange(batch.num_edges), batch.edge_width)
    assert torch.equal(a["value_key"] % T, batch.edge_type[edge])
    assert torch.equal(attr[edge, a["value_key"] // T], batch.edge_values)
    assert torch.equal(a["value_start"][edge] + a["value_key"] // T, torch.arange(batch.edge_values.numel()))


LAZY_CASES = [
    dict(aggr="sum", pool="mean", num_layers=2),
    dict(aggr="sum", pool="sum", num_layers=1, norm="batch"),
    dict(aggr="mean", pool="mean", num_layers=3, act="relu"),
    dict(aggr="mean", pool="sum", num_layers=1, layer_encoding="depth"),
]


@pytest.mark.parametrize("case", LAZY_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "autograd"])
def test_last_layer_without_edge_readout_equals_the_plain_formulation(case, grad):
    """Without an edge readout the last layer aggregates ``h W^T + b``
    per node instead of building ``e'`` and pools edges from the target
    nodes' aggregates (GMNConv.step): the same graph and node outputs, and
    the same gradients, as the plain formulation (graphs of three
    architectures; input neurons have no incoming edge)."""
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp", "vit_tiny")]
    width = max(g.template.max_width for g in graphs)
    torch.manual_seed(0)
    model = GMN(out_dim=3, hidden=16, node_out=2, edge_dim=width + 2, **case).fit_normalization(graphs)
    model = _randomize_(model.double(), seed=4).eval()
    with torch.set_grad_enabled(grad):
        out = model(collate(graphs, dtype=torch.float64))
        ref = reference_forward(model, collate(graphs, dtype=torch.float64))
    assert out.edge is None and ref[2] is None
    for name, o, r in (("graph", out.graph, ref[0]), ("node", out.node, ref[1])):
        assert o.shape == r.shape
        diff = float((o.detach() - r.detach()).abs().max())
        assert diff <= TOL * max(1.0, float(r.detach().abs().max())), f"{name}: {diff}"
    if grad:
        last = model.convs[-1].edge_out[1].weight  # used only through the aggregates in the lazy layer
        g_out = torch.autograd.grad(out.graph.sum() + out.node.sum(), [last, model.edge_val.weight])
        g_ref = torch.autograd.grad(ref[0].sum() + ref[1].sum(), [last, model.edge_val.weight])
        for a, b in zip(g_out, g_ref):
            assert float((a - b).abs().max()) <= TOL * max(1.0, float(b.abs().max()))


def test_step_with_aggregates_needs_a_linear_aggregation():
    from weightspace.nn.conv import GMNConv

    conv = GMNConv(4, aggr="max")
    assert not conv.linear_aggregation
    with pytest.raises(ValueError, match="sum or mean"):
        conv.step(torch.zeros(2, 4), torch.zeros(1, 4), torch.zeros(1, 4), None,
                  e_agg=(torch.zeros(2, 4), torch.zeros(2, 4)), counts=(torch.ones(2, 1), torch.ones(2, 1)))
