"""to_pyg keeps edge features compact: values per edge, no [E, widest] table."""

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import weightspace as ws
import zoo
from weightspace.graph import pad_edge_values, to_pyg_batch
from weightspace.nn import collate, from_pyg

MIXED = ("cnn_small", "vit_tiny", "token_transformer", "mlp")  # vit/token: edge order != value order


def _graph(name, seed=0):
    t = ws.graph_template(name)
    return t.graph(zoo.create_model(name, seed=seed).state_dict())


def _wide_kernel_graph():
    # a 7x7 stem then 1x1 convs: E * widest is far bigger than the values
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 64, 7), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 8, 1))
    a = ws.analyze(m, torch.randn(1, 3, 16, 16))
    return a.template.graph(m.state_dict())


@pytest.mark.parametrize("name", MIXED)
def test_to_pyg_values_per_edge_set_are_exact(name):
    g = _graph(name)
    t = g.template
    data = g.to_pyg()
    assert "edge_attr" not in data and "edge_mask" not in data
    width = data.edge_width
    assert width.shape == (t.num_edges,) and int(width.sum()) == data.edge_values.numel() == t.num_values
    start = torch.cumsum(width, 0) - width
    off = 0
    for s in t.edge_sets:  # every edge set (one kernel size each) holds exactly its tensor's values
        if s.pos is not None:
            assert torch.equal(width[off : off + s.num_edges], torch.full((s.num_edges,), s.width))
            a = int(start[off])
            got = data.edge_values[a : a + s.num_edges * s.width].view(s.num_edges, s.width)
            assert torch.equal(got, g.values[s.pos])
        else:
            assert int(width[off : off + s.num_edges].sum()) == 0
        off += s.num_edges
    # back to the state_dict, bit-exact
    back = g.with_edge_values(data.edge_values).to_state_dict()
    assert all(torch.equal(back[k], v) for k, v in g.to_state_dict().items())
    # the lazy padded view equals the old dense definition (int64 position table)
    pos = t.edge_pos()
    old = torch.zeros(pos.shape, dtype=g.values.dtype)
    old[pos >= 0] = g.values[pos[pos >= 0]]
    attr, mask = pad_edge_values(data.edge_values, data.edge_width, t.max_width)
    assert torch.equal(attr, old) and torch.equal(mask, pos >= 0)


def test_to_pyg_allocates_no_edges_by_widest_table():
    g = _wide_kernel_graph()
    t = g.template
    E, widest = t.num_edges, t.max_width
    assert widest == 49 and E * widest > 10 * t.num_values
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        data = g.to_pyg()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest < E * widest  # bytes: not even a bool [E, widest] mask was allocated
    assert not any(isinstance(k, tuple) and k[0] == "edge_pos" for k in t._cache)
    for v in data.to_dict().values():
        if isinstance(v, torch.Tensor):
            assert v.numel() < E * widest
    # the padded form is there on request
    dense = g.to_pyg(padded=True)
    assert dense.edge_attr.shape == dense.edge_mask.shape == (E, widest)
    assert torch.equal(dense.edge_attr, g.edge_attr()[0])


def test_batch_of_mixed_widths_round_trips_and_feeds_gmn_exactly():
    graphs = [_graph(n) for n in MIXED]
    batch = to_pyg_batch(graphs)
    assert "edge_attr" not in batch
    assert batch.edge_values.numel() == sum(g.template.num_values for g in graphs)
    for i, g in enumerate(graphs):
        d = batch.get_example(i)
        assert torch.equal(d.edge_values, g.edge_values()) and torch.equal(d.edge_width, g.template.edge_width())
    padded = to_pyg_batch(graphs, padded=True)
    attr, mask = pad_edge_values(batch.edge_values, batch.edge_width, padded.edge_attr.shape[1])
    assert torch.equal(attr, padded.edge_attr) and torch.equal(mask, padded.edge_mask)
    # the GMN's input from PyG equals its own builder's
    ref = collate(graphs)
    for b in (from_pyg(batch), from_pyg(padded)):
        assert torch.equal(b.edge_values, ref.edge_values) and torch.equal(b.edge_width, ref.edge_width)
        assert all(torch.equal(x, y) for x, y in zip(b.padded(), ref.padded()))
        assert torch.equal(b.edge_index, ref.edge_index) and torch.equal(b.edge_type, ref.edge_type)


def test_bad_widths_and_values_are_named():
    g = _graph("cnn_small")
    with pytest.raises(ValueError, match="width=4 is smaller"):
        pad_edge_values(g.edge_values(), g.template.edge_width(), 4)
    with pytest.raises(ValueError, match="edge_width sums to"):
        pad_edge_values(g.edge_values()[:-1], g.template.edge_width())
    with pytest.raises(ValueError, match="edge_values must have shape"):
        g.with_edge_values(g.edge_values()[:-1])
    with pytest.raises(ValueError, match="has width 9 > 4"):
        g.edge_attr(4)


def test_from_pyg_without_edge_features_is_a_clear_error():
    data = _graph("mlp").to_pyg()
    del data.edge_values
    with pytest.raises(ValueError, match="edge_values and edge_width"):
        from_pyg(data)
