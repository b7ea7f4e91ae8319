"""GMN's hybrid readout (``stats_dim``): it reads the per-tensor weight
statistics the feature predictors read, stays permutation invariant, and
refuses what it cannot use."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import weightspace.nn.gmn as gmn_module
from tests.nn.helpers import graph_and_permuted
from weightspace.common.tensor_stats import tensor_statistics
from weightspace.nn import GMN, collate
from weightspace.nn.train import check_metanetwork_config


def _model(g, **kw):
    torch.manual_seed(0)
    return GMN(out_dim=2, hidden=8, num_layers=1, stats_dim=GMN.stats_width(g.template), **kw)


def test_statistics_are_the_feature_predictors_and_cached_per_graph():
    g, gp, _ = graph_and_permuted("cnn_small")
    m = _model(g)
    t = g.template
    v = g.values.double().numpy()
    ref = np.concatenate([tensor_statistics(v[None, t.offsets[k]: t.offsets[k] + int(np.prod(t.shapes[k]))])[0]
                          for k in t.keys])
    s = m.graph_statistics([g, gp])
    np.testing.assert_allclose(s[0].numpy(), ref, rtol=1e-12, atol=1e-12)
    assert (id(g) in gmn_module._STATS_CACHE) and torch.equal(m.graph_statistics([g])[0], s[0])
    key = id(gp)
    del gp, s
    gc.collect()
    assert key not in gmn_module._STATS_CACHE  # the entry left with its graph


def test_hybrid_readout_is_invariant_and_uses_the_statistics():
    g, gp, _ = graph_and_permuted("cnn_small")
    other = graph_and_permuted("cnn_small", seed=2)[0]  # gp has g's statistics: std 0 -> kept at 1
    m = _model(g).eval()
    m.fit_normalization([g, gp, other])
    assert not torch.equal(m.stats_std, torch.ones_like(m.stats_std))
    with torch.no_grad():
        out, out_p = m([g]).graph, m([gp]).graph
        assert float((out - out_p).abs().max()) <= 1e-5
        m.stats_mean.add_(1.0)  # the readout depends on the statistics
        assert float((m([g]).graph - out).abs().max()) > 1e-4


def test_plain_config_still_loads_and_errors_are_clear():
    g, _, _ = graph_and_permuted("cnn_small")
    plain = GMN(out_dim=1, hidden=8, num_layers=1).config()
    cfg = {k: v for k, v in plain.items() if k != "stats_dim"}  # saved before the option existed
    assert GMN(**check_metanetwork_config("GMN", cfg)).hparams["stats_dim"] == 0
    small = GMN(out_dim=1, hidden=8, num_layers=1, stats_dim=9)
    with pytest.raises(ValueError, match="stats_dim=GMN.stats_width"):
        small([g])
    with pytest.raises(ValueError, match="keep_graphs=True"):
        _model(g)(collate([g], keep_graphs=False))
