"""GMN(readout_norm="batch"): the graph readout's input standardized across
the batch keeps invariance, works on a one-graph batch, and is saved."""

from __future__ import annotations

import pytest
import torch

from tests.nn.helpers import graph_and_permuted
from weightspace.nn import GMN
from weightspace.nn.train import load_checkpoint, save_checkpoint


def _model() -> GMN:
    torch.manual_seed(0)
    return GMN(out_dim=3, hidden=8, num_layers=1, readout_norm="batch")


def test_readout_norm_keeps_invariance_in_train_and_eval():
    g, gp, _ = graph_and_permuted("siren")
    h, _, _ = graph_and_permuted("siren", seed=2)
    m = _model().train()
    with torch.no_grad():
        a, b = m([g, h]).graph, m([gp, h]).graph  # batch statistics: the permuted member changes nothing
        assert float((a - b).abs().max()) <= 1e-4
        # standardized across the batch: the two graphs' outputs differ by more than the constant part would allow
        assert float((a[0] - a[1]).abs().max()) > 1e-3
        m.eval()
        assert float((m([g]).graph - m([gp]).graph).abs().max()) <= 1e-4


def test_readout_norm_one_graph_in_training_uses_running_statistics():
    g, _, _ = graph_and_permuted("siren")
    m = _model()
    with torch.no_grad():
        m.train()
        m([g, graph_and_permuted("siren", seed=2)[0]])  # move the running statistics off their init
        one_train = m([g]).graph
        m.eval()
        one_eval = m([g]).graph
    assert torch.allclose(one_train, one_eval, atol=1e-6)


def test_readout_norm_is_saved_and_checked(tmp_path):
    g, _, _ = graph_and_permuted("siren")
    m = _model()
    with torch.no_grad():
        m.train()
        m([g, graph_and_permuted("siren", seed=2)[0]])
    m.eval()
    save_checkpoint(m, tmp_path / "gmn")
    loaded, _ = load_checkpoint(tmp_path / "gmn")
    with torch.no_grad():
        assert torch.allclose(loaded([g]).graph, m([g]).graph, atol=1e-6)
    assert loaded.hparams["readout_norm"] == "batch"
    with pytest.raises(ValueError, match="readout_norm"):
        GMN(readout_norm="layer")


def test_fit_sets_exact_batchnorm_statistics_for_the_kept_weights():
    """``fit`` recomputes BatchNorm running statistics over the training set
    before validating, so the restored model's readout mean is the training
    graphs' mean at its own weights (the running average lagged them)."""
    from weightspace.nn.train import TrainConfig, fit

    graphs = [graph_and_permuted("siren", seed=s)[0] for s in range(4)]
    data = [(g, i % 3) for i, g in enumerate(graphs)]
    m = _model()
    fit(m, data, data[:2], TrainConfig(task="classification", epochs=2, batch_size=2, lr=1e-2, seed=0))
    seen = []
    h = m.readout_norm.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    try:
        with torch.no_grad():
            m(graphs)
    finally:
        h.remove()
    assert torch.allclose(m.readout_norm.running_mean, seen[0].mean(0), atol=1e-5)
    assert float(m.readout_norm.num_batches_tracked) == 2  # two batches of the 4 training graphs
