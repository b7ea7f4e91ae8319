"""Canonicalization before a metanetwork, and full-group augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightspace.core import graph_template
from weightspace.errors import ConfigError
from weightspace.predict import MetaNetPredictor, load_predictor
from weightspace.predict.canonical import canonicalize_graphs
from weightspace.symmetry import apply_symmetry, random_symmetry


def _graphs(activation: str, n: int, seed: int = 0):
    t = graph_template("cnn_small", width=4, depth=2, activation=activation)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sd = {k: torch.randn(t.shapes[k], generator=gen) * 0.5 for k in t.keys}
        out.append(t.graph(sd))
    return out


def _moved(graphs, seed: int):
    out = []
    for i, g in enumerate(graphs):
        t = g.template
        sym = random_symmetry(t.spec, seed=seed + i, log_scale_std=1.0)
        out.append(t.graph(apply_symmetry(g.to_state_dict(), t.spec, sym)))
    return out


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_canonicalize_graphs_is_group_invariant(activation):
    graphs = _graphs(activation, 5)
    moved = _moved(graphs, 100)
    assert not torch.allclose(graphs[0].values, moved[0].values)
    a = canonicalize_graphs(graphs, "full")
    b = canonicalize_graphs(moved, "full")
    for x, y in zip(a, b):
        torch.testing.assert_close(x.values, y.values, rtol=1e-4, atol=1e-5)
    assert canonicalize_graphs(graphs, "none")[0] is graphs[0]
    with pytest.raises(ValueError, match="canonicalize must be one of"):
        canonicalize_graphs(graphs, "scale")


def _fit(graphs, **kw):
    y = np.array([float(g.values.abs().mean()) for g in graphs])
    return MetaNetPredictor("gmn", model_kwargs={"hidden": 8, "num_layers": 2}, epochs=2, val_fraction=0.0,
                            seed=0, **kw).fit(graphs, y)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_canonicalized_gmn_is_invariant_to_the_full_group(activation):
    graphs = _graphs(activation, 8)
    moved = _moved(graphs, 7)
    canon = _fit(graphs, canonicalize="scale_sign")
    np.testing.assert_allclose(canon.predict(graphs), canon.predict(moved), rtol=1e-4, atol=1e-5)
    if activation == "relu":  # plain GMN is permutation-invariant only: rescaling changes its prediction
        plain = _fit(graphs)
        assert not np.allclose(plain.predict(graphs), plain.predict(moved), rtol=1e-4, atol=1e-5)


def test_canonicalize_round_trips_through_save_load(tmp_path):
    graphs = _graphs("relu", 8)
    p = _fit(graphs, canonicalize="full", augment_group="full")
    q = load_predictor(p.save(tmp_path / "p"))
    assert q.canonicalize == "full" and q.augment_group == "full"
    moved = _moved(graphs, 3)
    np.testing.assert_allclose(q.predict(moved), p.predict(graphs), rtol=1e-4, atol=1e-5)


def test_bad_canonicalize_option_is_a_config_error(tmp_path):
    graphs = _graphs("relu", 4)
    with pytest.raises(ConfigError, match="canonicalize"):
        _fit(graphs, canonicalize="yes")
    with pytest.raises(ConfigError, match="augment_group"):
        _fit(graphs, augment_group="scale")
    p = _fit(graphs, canonicalize="full")
    path = p.save(tmp_path / "p")
    import json

    info = json.loads((path / "predictor.json").read_text())
    info["params"]["canonicalize"] = "sometimes"
    (path / "predictor.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="canonicalize"):
        load_predictor(path)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_full_group_augmentation_changes_inputs_but_keeps_function(activation):
    from weightspace.nn.train import symmetry_sample

    graphs = _graphs(activation, 4)
    gen = torch.Generator().manual_seed(0)
    moved = [symmetry_sample((g, 1.0), gen)[0] for g in graphs]
    from weightspace.arch.registry import create_model

    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for g, m in zip(graphs, moved):
        assert not torch.allclose(g.values, m.values)
        net_a = create_model("cnn_small", seed=0, width=4, depth=2, activation=activation)
        net_b = create_model("cnn_small", seed=0, width=4, depth=2, activation=activation)
        net_a.load_state_dict(g.to_state_dict())
        net_b.load_state_dict(m.to_state_dict())
        net_a.eval(), net_b.eval()
        with torch.no_grad():
            torch.testing.assert_close(net_a(x), net_b(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["gbm", "linear"])
def test_feature_predictor_canonicalize(kind, tmp_path):
    from weightspace.predict import make_predictor

    graphs = _graphs("relu", 24)
    y = np.array([float(g.values.abs().mean()) for g in graphs])
    kw = {"min_samples_leaf": 2, "max_iter": 20} if kind == "gbm" else {}
    p = make_predictor(kind, canonicalize="scale_sign", **kw).fit(graphs, y)
    moved = _moved(graphs, 11)
    np.testing.assert_allclose(p.predict(moved), p.predict(graphs), rtol=1e-4, atol=1e-6)
    q = load_predictor(p.save(tmp_path / "p"))
    assert q.canonicalize == "scale_sign"
    np.testing.assert_allclose(q.predict(moved), p.predict(graphs), rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="needs each network's symmetries"):
        p.predict([g.to_state_dict() for g in graphs[:2]])
    with pytest.raises(ConfigError, match="canonicalize"):
        make_predictor(kind, canonicalize="maybe", **kw).fit(graphs, y)


def test_train_config_rejects_unknown_augment_group():
    from weightspace.nn.train import TrainConfig

    assert TrainConfig(augment_group="full").augment_group == "full"
    with pytest.raises(ValueError, match="augment_group"):
        TrainConfig(augment_group="scale")
