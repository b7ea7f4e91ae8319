import math

import pytest
import torch
from torch import nn

import weightspace as ws
import zoo
from weightspace.errors import NonFiniteWeightsError, StateDictError
from weightspace.graph import EDGE_TYPES, NODE_TYPES, to_pyg_batch
from weightspace.io import load_state_dict, save_state_dict, state_dict_hash
from weightspace.symmetry import apply_permutation, random_permutation

SMALL = [n for n in zoo.list_models() if n not in ("resnet18", "resnet50")]


@pytest.fixture(scope="module")
def cache():
    return {}


def _a(cache, name):
    if name not in cache:
        cache[name] = ws.analyze(name)
    return cache[name]


@pytest.mark.parametrize("name", zoo.list_models())
def test_round_trip_is_bit_exact(name, cache):
    a = _a(cache, name)
    sd = a.module.state_dict()
    g = a.template.graph(sd)
    out = g.to_state_dict()
    assert list(out) == list(sd)
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in sd.items())
    if name in SMALL:  # through padded edge features and back
        attr, mask = g.edge_attr()
        back = g.with_edge_attr(attr).to_state_dict()
        assert all(torch.equal(back[k], v) for k, v in sd.items())
        # every value sits on exactly one edge feature
        assert int(mask.sum()) == sum(v.numel() for v in sd.values() if v.is_floating_point())


@pytest.mark.parametrize("name", zoo.list_models())
def test_counts(name, cache):
    a = _a(cache, name)
    t = a.template
    sd = a.module.state_dict()
    assert t.num_nodes == t.num_neurons + int((t.node_type >= NODE_TYPES.index("module")).sum())
    # weight edges: one per scalar, or one per kernel / flattened slice
    expected = sum(s.pos.numel() // s.width for s in t.edge_sets if s.pos is not None)
    assert t.num_weight_edges == expected
    assert sum(s.pos.numel() for s in t.edge_sets if s.pos is not None) == sum(
        v.numel() for v in sd.values() if v.is_floating_point()
    )


def test_counts_known_values(cache):
    mlp = _a(cache, "mlp").template  # 64 -> 64 -> 64 -> 10
    assert mlp.num_neurons == 64 + 64 + 64 + 10
    assert mlp.num_edges == 64 * 64 * 2 + 64 * 10 + 64 + 64 + 10
    cnn = _a(cache, "cnn_small").template  # 1 -> 16 -> 16 -> 16 (3x3) -> 10
    assert cnn.num_neurons == 1 + 16 * 3 + 10
    kernel_edges = 1 * 16 + 16 * 16 * 2
    assert cnn.num_weight_edges == kernel_edges + 16 * 10 + 16 * 3 + 10
    assert cnn.max_width == 9


@pytest.mark.parametrize("name", SMALL)
def test_graph_is_equivariant_to_spec_permutations(name, cache):
    """graph(permuted weights) == graph(weights) with nodes relabelled."""
    a = _a(cache, name)
    t = a.template
    sd = a.module.state_dict()
    perm = random_permutation(a.spec, seed=3)
    g0, g1 = t.graph(sd), t.graph(apply_permutation(sd, a.spec, perm))
    idx = t.node_permutation(perm)  # new node i = old node idx[i]
    inv = torch.argsort(idx)
    ei = t.edge_index()
    attr0, _ = g0.edge_attr()
    attr1, _ = g1.edge_attr()
    etype = t.edge_type()

    def canon(src, dst, attr):
        rows = torch.cat([src[:, None].double(), dst[:, None].double(), etype[:, None].double(), attr.double()], 1)
        order = torch.from_numpy(__import__("numpy").lexsort(rows.T.flip(0).numpy()))
        return rows[order]

    relabelled = canon(inv[ei[0]], inv[ei[1]], attr0)
    assert torch.equal(relabelled, canon(ei[0], ei[1], attr1))
    # node features of exchanged neurons agree
    for feat in (t.node_type, t.node_layer, t.node_role, t.node_pos):
        assert torch.equal(feat[idx], feat)


def test_pyg_batch_of_mixed_architectures(cache):
    graphs = [
        _a(cache, n).template.graph(_a(cache, n).module.state_dict()) for n in ("mlp", "cnn_small", "vit_tiny")
    ]
    batch = to_pyg_batch(graphs, padded=True)  # the [E, widest] table only on request
    assert batch.num_graphs == 3
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    assert batch.edge_attr.shape == (sum(g.num_edges for g in graphs), max(g.template.max_width for g in graphs))
    assert int(batch.edge_index.max()) < batch.num_nodes
    assert int(batch.edge_mask.sum()) == sum(g.values.numel() for g in graphs)
    assert batch.edge_type.max() < len(EDGE_TYPES)
    compact = to_pyg_batch(graphs)
    assert compact.edge_width.shape == (sum(g.num_edges for g in graphs),)
    assert compact.edge_values.numel() == int(compact.edge_width.sum()) == sum(g.values.numel() for g in graphs)


def test_from_state_dict_plus_arch_equals_from_module():
    m = zoo.create_model("cnn_small", seed=4)
    x = zoo.example_input("cnn_small")
    g1 = ws.parameter_graph(m, x)
    g2 = ws.parameter_graph(m.state_dict(), arch="cnn_small")
    assert torch.equal(g1.values, g2.values)
    assert torch.equal(g1.edge_index, g2.edge_index)


def test_state_dict_errors_name_the_tensor():
    sd = zoo.create_model("cnn_small", seed=0).state_dict()
    missing = {k: v for k, v in sd.items() if k != "classifier.bias"}
    with pytest.raises(StateDictError, match="missing keys.*classifier.bias"):
        ws.parameter_graph(missing, arch="cnn_small")
    extra = {**sd, "foo.weight": torch.zeros(3)}
    with pytest.raises(StateDictError, match="unexpected keys.*foo.weight"):
        ws.parameter_graph(extra, arch="cnn_small")
    bad = {**sd, "classifier.weight": torch.zeros(10, 17)}
    with pytest.raises(StateDictError, match=r"classifier.weight.*\(10, 17\).*\(10, 16\)"):
        ws.parameter_graph(bad, arch="cnn_small")
    notensor = {**sd, "classifier.bias": [0.0] * 10}
    with pytest.raises(StateDictError, match="not a tensor"):
        ws.parameter_graph(notensor, arch="cnn_small")


def test_nan_weights_error_by_default_and_allowed_on_request():
    sd = zoo.create_model("mlp", seed=0).state_dict()
    sd["layers.0.weight"] = sd["layers.0.weight"].clone()
    sd["layers.0.weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="layers.0.weight.*1 NaN"):
        ws.parameter_graph(sd, arch="mlp")
    g = ws.parameter_graph(sd, arch="mlp", allow_nonfinite=True)
    assert torch.isnan(g.to_state_dict()["layers.0.weight"][0, 0])


def test_write_back_defines_new_weights():
    a = ws.analyze("mlp")
    g = a.template.graph(a.module.state_dict())
    attr, mask = g.edge_attr()
    new = g.with_edge_attr(attr * 2)
    sd = new.to_state_dict()
    assert torch.equal(sd["layers.0.weight"], a.module.state_dict()["layers.0.weight"] * 2)
    with pytest.raises(ValueError, match="shape"):
        g.with_edge_attr(attr[:-1])


def test_safetensors_and_weights_only_io(tmp_path):
    sd = zoo.create_model("resnet20", seed=0).state_dict()
    path = save_state_dict(sd, tmp_path / "m.safetensors")
    back = load_state_dict(path)
    assert state_dict_hash(back) == state_dict_hash(sd)
    torch.save({"state_dict": sd}, tmp_path / "m.pt")
    assert state_dict_hash(load_state_dict(tmp_path / "m.pt")) == state_dict_hash(sd)


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(StateDictError, match="weights_only"):
        load_state_dict(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "none.safetensors")


def test_tied_weights_share_permutations():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(12, 8)
            self.hidden = nn.Linear(8, 8)
            self.out = nn.Linear(8, 12, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, t):
            return self.out(torch.relu(self.hidden(self.emb(t))))

    m = Tied().double()
    x = torch.randint(0, 12, (2, 5))
    a = ws.analyze(m, x)
    perm = random_permutation(a.spec, seed=0)
    sd = apply_permutation(m.state_dict(), a.spec, perm)
    assert torch.equal(sd["emb.weight"], sd["out.weight"])
    m2 = Tied().double()
    m2.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x), atol=1e-10)
    assert math.isfinite(a.template.graph(m.state_dict()).values.sum().item())
