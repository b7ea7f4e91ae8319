"""GMN symmetry: graph outputs invariant, node/edge outputs equivariant, for
every registered architecture and a random permutation from its spec."""

from __future__ import annotations

import pytest
import torch

from tests.nn.helpers import analysis, fast_archs, graph_and_permuted, max_sd_diff
from weightspace.nn import GMN, FlatMLP, StatNN, collate, probe_features
from weightspace.symmetry import apply_permutation

TOL = 1e-4


def _check_arch(arch: str, aggr: str, hidden: int = 16, num_layers: int = 2,
                dtype: torch.dtype = torch.float32, relative: bool = False) -> None:
    """``relative``: node / edge (equivariant) outputs compared at ``TOL``
    times their largest magnitude (at least 1) instead of absolutely; the
    invariant graph output is always compared absolutely."""
    g, gp, perm = graph_and_permuted(arch)
    a = analysis(arch)
    width = g.template.max_width
    torch.manual_seed(0)
    model = GMN(out_dim=3, hidden=hidden, num_layers=num_layers, aggr=aggr, node_out=2,
                edge_out=max(width, 1), edge_dim=max(width, 1)).to(dtype).eval()
    with torch.no_grad():
        out, out_p = model([g]), model([gp])
    # invariant graph output, and it is not trivially constant
    assert out.graph.shape == (1, 3)
    assert float((out.graph - out_p.graph).abs().max()) <= TOL
    # equivariant node output: node i of the permuted graph is node idx[i]
    idx = g.template.node_permutation(perm)
    tol = TOL * max(1.0, float(out.node.abs().max()), float(out.edge.abs().max())) if relative else TOL
    assert float((out_p.node - out.node[idx]).abs().max()) <= tol
    # equivariant edge output: write back, permute, compare with the output on the permuted graph
    new_sd = out.batch.write_back(out.edge)[0].to_state_dict()
    new_sd_p = out_p.batch.write_back(out_p.edge)[0].to_state_dict()
    assert max_sd_diff(apply_permutation(new_sd, a.spec, perm), new_sd_p) <= tol
    # the edge output is not itself invariant (else the test above is vacuous)
    assert max_sd_diff(new_sd, new_sd_p) > 10 * TOL


@pytest.mark.parametrize("arch", fast_archs())
def test_gmn_invariant_and_equivariant(arch):
    _check_arch(arch, "sum")


@pytest.mark.parametrize("arch", ["cnn_small", "vit_tiny", "token_transformer", "mobilenet_tiny"])
@pytest.mark.parametrize("aggr", ["mean", "max", "pna"])
def test_gmn_symmetry_every_aggregation(arch, aggr):
    _check_arch(arch, aggr, hidden=8)


def test_gmn_symmetry_in_float64():
    _check_arch("resnet20", "sum", dtype=torch.float64)


@pytest.mark.slow
def test_gmn_invariant_resnet18_float64():
    _check_arch("resnet18", "sum", hidden=4, num_layers=1, dtype=torch.float64)


@pytest.mark.slow
def test_gmn_invariant_resnet50():
    """float32 (float64 does not fit in 24 GiB for ResNet-50's 15.5M edges):
    the graph output is invariant to 1e-4 absolutely; node / edge outputs of
    size ~34 move by ~2e-4 (6e-6 relative) from the summation order alone, so
    they are compared at 1e-4 relative to their scale."""
    _check_arch("resnet50", "sum", hidden=4, num_layers=1, relative=True)


def test_flat_mlp_is_not_invariant():
    """Control: a model that reads weights in storage order sees the
    permutation (so the invariance tests above can fail)."""
    g, gp, _ = graph_and_permuted("cnn_small")
    torch.manual_seed(0)
    flat = FlatMLP.for_template(g.template, out_dim=3).eval()
    with torch.no_grad():
        diff = float((flat.predict(flat.collate([g])) - flat.predict(flat.collate([gp]))).abs().max())
    assert diff > 1e-3


@pytest.mark.parametrize("arch", ["cnn_small", "vit_tiny", "resnet20"])
def test_statnn_is_invariant(arch):
    g, gp, _ = graph_and_permuted(arch)
    torch.manual_seed(0)
    m = StatNN.for_template(g.template, out_dim=2).eval()
    with torch.no_grad():
        assert float((m.predict(m.collate([g])) - m.predict(m.collate([gp]))).abs().max()) <= TOL


def test_node_features_carry_no_neuron_position():
    """The initial encodings of exchangeable neurons (same block, same role)
    are identical, so nothing downstream can tell them apart."""
    g, _, _ = graph_and_permuted("cnn_small")
    torch.manual_seed(0)
    model = GMN(out_dim=1, hidden=8).eval()
    b = collate([g])
    with torch.no_grad():
        x = model.encode_nodes(b, model.context(b))
    t = g.template
    hidden = (t.node_pos == -1) & (t.node_block >= 0)
    for blk in t.node_block[hidden].unique():
        rows = x[(t.node_block == blk) & hidden]
        assert float((rows - rows[0]).abs().max()) <= 1e-6
    # fixed neurons (inputs/outputs) are told apart by their position
    out_nodes = (t.node_type == 2)
    assert float((x[out_nodes][0] - x[out_nodes][1]).abs().max()) > 0


def test_heterogeneous_batch_matches_single_graphs():
    """One batch mixing MLP, CNN, ResNet and transformer graphs gives, per
    graph, the outputs of running each alone; permuting one member moves
    only its own outputs."""
    archs = ["mlp", "cnn_small", "resnet20", "vit_tiny", "token_transformer"]
    pairs = [graph_and_permuted(a) for a in archs]
    graphs = [p[0] for p in pairs]
    torch.manual_seed(0)
    model = GMN(out_dim=2, hidden=16, num_layers=2, aggr="pna", layer_encoding="depth", edge_out=17).eval()
    with torch.no_grad():
        out = model(graphs)
        singles = torch.cat([model([g]).graph for g in graphs])
        assert out.graph.shape == (len(archs), 2)
        assert float((out.graph - singles).abs().max()) <= TOL
        mixed = [pairs[0][1]] + graphs[1:]
        out2 = model(mixed)
        assert float((out2.graph - out.graph).abs().max()) <= TOL
        new = out.batch.write_back(out.edge)
    assert [n.template.arch for n in new] == archs


def test_probe_features_keep_invariance():
    """Probe activations are equivariant node features: with them the GMN
    stays invariant, and they are not all zero."""
    arch = "cnn_small"
    g, gp, perm = graph_and_permuted(arch)
    module = analysis(arch).module
    probes = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    f, fp = probe_features(g, module, probes), probe_features(gp, module, probes)
    assert f.shape == (g.num_nodes, 4) and f.abs().sum() > 0
    assert float((fp - f[g.template.node_permutation(perm)]).abs().max()) <= TOL
    torch.manual_seed(0)
    model = GMN(out_dim=1, hidden=16, extra_dim=4).eval()
    with torch.no_grad():
        y = model.predict(collate([g], node_extra=[f]))
        yp = model.predict(collate([gp], node_extra=[fp]))
    assert float((y - yp).abs().max()) <= TOL


def test_edge_residual_with_zero_head_returns_the_input_weights():
    g, _, _ = graph_and_permuted("resnet20")
    model = GMN(out_dim=0, hidden=8, num_layers=1, edge_dim=9, edge_out=9, edge_residual=True).eval()
    torch.nn.init.zeros_(model.edge_head[-1].weight)
    torch.nn.init.zeros_(model.edge_head[-1].bias)
    with torch.no_grad():
        new = model.write_back([g])[0]
    assert max_sd_diff(new.to_state_dict(), g.to_state_dict()) <= 1e-6


def test_pyg_batch_input_matches_collate():
    from weightspace.graph import to_pyg_batch

    gs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp")]
    torch.manual_seed(0)
    model = GMN(out_dim=2, hidden=8).eval()
    with torch.no_grad():
        a = model.predict(gs)
        b = model.predict(to_pyg_batch(gs))
    assert float((a - b).abs().max()) <= 1e-5


def test_clear_errors():
    g, _, _ = graph_and_permuted("cnn_small")
    with pytest.raises(ValueError, match="edge_dim"):
        GMN(edge_dim=4)([g])
    with pytest.raises(ValueError, match="backend"):
        GMN(backend="jax")
    with pytest.raises(ValueError, match="aggr"):
        GMN(aggr="median")
    with pytest.raises(ValueError, match="edge readout"):
        GMN(out_dim=1).write_back([g])


def test_collate_matches_parameter_graph_edge_attr():
    """Batched edge values/masks equal each graph's own edge_attr, for
    consecutive and interleaved templates."""
    g1, g2 = (graph_and_permuted("cnn_small", seed=s)[0] for s in (1, 2))
    h = graph_and_permuted("vit_tiny")[0]
    for graphs in ([g1, g2, h], [g1, h, g2]):
        b = collate(graphs)
        assert b.edge_attr is None and b.edge_mask is None  # compact unless asked for
        battr, bmask = b.padded()
        bp = collate(graphs, padded=True)
        assert torch.equal(bp.edge_attr, battr) and torch.equal(bp.edge_mask, bmask)
        for i, g in enumerate(graphs):
            attr, mask = g.edge_attr(b.width)
            s0, s1 = int(b.edge_ptr[i]), int(b.edge_ptr[i + 1])
            assert torch.equal(battr[s0:s1], attr.float()) and torch.equal(bmask[s0:s1], mask)
            v0 = int(b.edge_width[:s0].sum())
            assert torch.equal(b.edge_values[v0 : v0 + g.template.num_values], g.edge_values().float())
            assert torch.equal(b.edge_index[:, s0:s1] - b.node_ptr[i], g.template.edge_index())


def test_write_back_matches_with_edge_attr():
    g = graph_and_permuted("vit_tiny")[0]
    b = collate([g, g])
    out = torch.randn(b.num_edges, 20, generator=torch.Generator().manual_seed(0))
    new = b.write_back(out)
    ref = g.with_edge_attr(b.split_edges(out)[1][:, : g.template.max_width].contiguous())
    assert torch.equal(new[1].values, ref.values)


def test_width_groups_cover_every_valued_edge_once():
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "vit_tiny", "mlp")]
    b = collate(graphs)
    seen = torch.zeros(b.num_edges, dtype=torch.long)
    attr, _ = b.padded()
    for w, rows, idx in b.width_groups():
        assert bool((b.edge_width[rows] == w).all())
        assert torch.equal(b.edge_values[idx], attr[rows, :w])
        seen[rows] += 1
    assert torch.equal(seen, (b.edge_width > 0).long())


@pytest.mark.parametrize("aggr", ["sum", "pna"])
def test_compact_and_padded_inputs_give_the_same_outputs_and_gradients(aggr):
    """The GMN reads compact per-width values by default; a batch carrying
    the padded edge_attr / edge_mask (a caller's own features) takes the
    padded encoder. Same outputs and parameter gradients."""
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "vit_tiny")]
    torch.manual_seed(0)
    model = GMN(out_dim=2, hidden=8, num_layers=2, aggr=aggr, node_out=2, edge_out=17, edge_dim=32)
    model.fit_normalization(graphs)
    outs, grads = [], []
    for b in (collate(graphs), collate(graphs, padded=True)):
        model.zero_grad()
        o = model(b)
        (o.graph.sum() + o.node.pow(2).mean() + o.edge.pow(2).mean()).backward()
        outs.append((o.graph, o.node, o.edge))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and "edge_val.weight" in grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-3, atol=1e-5, msg=k)
    # the no-grad (in-place) forward equals the autograd one
    with torch.no_grad():
        o = model(collate(graphs))
    torch.testing.assert_close(o.graph, outs[0][0].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(o.edge, outs[0][2].detach(), rtol=1e-5, atol=1e-6)


def test_fit_normalization_is_the_rms_per_edge_type():
    from weightspace.graph import EDGE_TYPES

    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "vit_tiny")]
    model = GMN(out_dim=1, hidden=8, num_layers=1, edge_dim=32).fit_normalization(graphs)
    attr, mask = collate(graphs, padded=True).padded()
    types = collate(graphs).edge_type
    for t in range(len(EDGE_TYPES)):
        vals = attr[types == t][mask[types == t]]
        ref = float(vals.pow(2).mean().sqrt()) if vals.numel() else 1.0
        assert abs(float(model.edge_scale[t]) - ref) <= 1e-5 * max(ref, 1.0)


def test_collate_allocates_no_edges_times_widest_table(monkeypatch):
    """A batch mixing a 9-wide conv net and a 1-wide MLP holds E + V
    floats, not E x 9 (the padded view is only built on request)."""
    import weightspace.nn.batch as nb

    def boom(*a, **k):
        raise AssertionError("pad_edge_values called")

    monkeypatch.setattr(nb, "pad_edge_values", boom)
    graphs = [graph_and_permuted(a)[0] for a in ("cnn_small", "mlp")]
    b = collate(graphs)
    model = GMN(out_dim=1, hidden=8, num_layers=1)
    with torch.no_grad():
        model(b)
    assert b.edge_values.numel() == sum(g.template.num_values for g in graphs)


def test_pyg_context_kernels_match_gather_and_scatter_with_gradients():
    """The embedding_bag gather / segment reductions of the PyG backend
    equal plain indexing and index_add, values and gradients (float64)."""
    from weightspace.nn.conv.gmn_conv import PyGContext

    b = collate([graph_and_permuted(a)[0] for a in ("cnn_small", "mlp")], dtype=torch.float64)
    ctx = PyGContext(b)
    src, dst = b.edge_index
    n, E = b.num_nodes, b.num_edges
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    m = torch.randn(E, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ctx.gather(a, c), a[src] + c[dst])
    for direction, row in (("in", dst), ("out", src)):
        ref = torch.zeros(n, 3, dtype=torch.float64).index_add(0, row, m)
        torch.testing.assert_close(ctx.segment_sum(m, direction), ref)
        ref_max = torch.full((n, 3), -torch.inf, dtype=torch.float64).index_reduce(0, row, m, "amax")
        ref_max = torch.where(torch.isinf(ref_max), 0.0, ref_max)
        torch.testing.assert_close(ctx.segment_max(m, direction), ref_max)
        # gradients against the plain formulation's autograd (a full
        # gradcheck builds the [E*3, n*3] Jacobian column by column: minutes)
        up = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        (got,) = torch.autograd.grad(ctx.segment_sum(m, direction), m, up)
        (want,) = torch.autograd.grad(torch.zeros(n, 3, dtype=torch.float64).index_add(0, row, m), m, up)
        torch.testing.assert_close(got, want)
    up = torch.randn(E, 3, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(ctx.gather(a, c), (a, c), up)
    want = torch.autograd.grad(a[src] + c[dst], (a, c), up)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_)
