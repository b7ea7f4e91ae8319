"""GMN.compile_(): the compiled inference path computes what the eager one
does (float64 to 1e-10; float32 with oneDNN products up to rounding), stays
permutation invariant, and falls back to eager, with a warning, where no C++
compiler exists or compiling fails. Training (gradients) always runs eager.

The tests that really compile take tens of seconds (inductor runs g++) and
are marked slow; the fallback and dispatch tests are fast."""

from __future__ import annotations

import pytest
import torch

import weightspace.nn.gmn as gmn_module
from tests.nn.helpers import graph_and_permuted
from weightspace.nn import GMN, collate


def _pair(**kw) -> tuple[GMN, GMN]:
    torch.manual_seed(0)
    eager = GMN(out_dim=2, hidden=8, num_layers=2, **kw).eval()
    other = GMN(out_dim=2, hidden=8, num_layers=2, **kw).eval()
    other.load_state_dict(eager.state_dict())
    return eager, other


def _graphs(arch: str = "mlp", n: int = 3):
    return [graph_and_permuted(arch, seed=s)[0] for s in range(1, n + 1)]


def test_no_compiler_warns_and_stays_eager(monkeypatch):
    monkeypatch.setattr(gmn_module, "compiler_missing", lambda: "no usable C++ compiler for torch.compile (test)")
    eager, model = _pair()
    with pytest.warns(RuntimeWarning, match="no usable C\\+\\+ compiler.*runs eager"):
        assert model.compile_() is model
    assert not model._compiled
    b = collate(_graphs())
    with torch.inference_mode():
        assert torch.equal(model.predict(b), eager.predict(b))


def test_compile_failure_warns_and_falls_back(monkeypatch):
    def broken(*args, **kwargs):
        raise torch._dynamo.exc.TorchDynamoException("g++ exited with status 1")

    monkeypatch.setattr(gmn_module, "compiler_missing", lambda: None)
    monkeypatch.setattr(gmn_module, "_COMPILED_LAYERS", broken)
    eager, model = _pair()
    model.compile_()
    assert model._compiled
    b = collate(_graphs())
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match="compiling failed.*g\\+\\+ exited.*runs eager"):
        out = model.predict(b)
    assert not model._compiled  # eager from then on
    with torch.inference_mode():
        assert torch.equal(out, eager.predict(b))


def test_other_errors_are_not_swallowed(monkeypatch):
    def wrong(*args, **kwargs):
        raise ValueError("a user error inside the layers")

    monkeypatch.setattr(gmn_module, "compiler_missing", lambda: None)
    monkeypatch.setattr(gmn_module, "_COMPILED_LAYERS", wrong)
    _, model = _pair()
    model.compile_()
    with torch.inference_mode(), pytest.raises(ValueError, match="user error"):
        model.predict(collate(_graphs()))


def test_training_runs_eager(monkeypatch):
    """With autograd on, the compiled function is never called and the
    gradients are the eager ones."""
    def forbidden(*args, **kwargs):
        raise AssertionError("compiled layers called with autograd on")

    monkeypatch.setattr(gmn_module, "compiler_missing", lambda: None)
    monkeypatch.setattr(gmn_module, "_COMPILED_LAYERS", forbidden)
    eager, model = _pair()
    model.compile_().train()
    eager.train()
    b = collate(_graphs())
    for m in (eager, model):
        m.predict(b).square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), model.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name


def test_dgl_backend_is_refused():
    model = GMN(out_dim=1, hidden=8, num_layers=1)
    model.backend = "dgl"  # the check reads the backend only (building a DGL GMN needs dgl)
    with pytest.raises(ValueError, match="compile_ supports the pyg backend"):
        model.compile_()


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{}, {"edge_out": 64, "aggr": "mean"}], ids=["lazy-last-layer", "edge-readout"])
def test_compiled_matches_eager_and_is_invariant(kw):
    """float64: the compiled layers (torch.mm products) equal eager to 1e-10 on
    batches of different sizes and architectures (one compile: dynamic shapes),
    and a permuted network gives the same graph output."""
    eager, model = _pair(**kw)
    eager, model = eager.double(), model.double()
    if model.compile_()._compiled is False:
        pytest.skip("no C++ compiler")
    g, gp, _ = graph_and_permuted("cnn_small")
    batches = [collate(_graphs("mlp", 3)), collate([g, gp]), collate(_graphs("cnn_small", 5))]
    with torch.inference_mode():
        for b in batches:
            a, c = eager(b), model(b)
            torch.testing.assert_close(c.graph, a.graph, rtol=1e-10, atol=1e-10)
            if kw:
                torch.testing.assert_close(c.edge, a.edge, rtol=1e-10, atol=1e-10)
        out = model.predict(batches[1])
    assert model._compiled  # no fallback happened
    torch.testing.assert_close(out[0], out[1], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_compiled_float32_matches_eager():
    """float32 (the oneDNN products): equal up to float32 rounding."""
    eager, model = _pair()
    if model.compile_()._compiled is False:
        pytest.skip("no C++ compiler")
    b = collate(_graphs("cnn_small", 4))
    with torch.inference_mode():
        torch.testing.assert_close(model.predict(b), eager.predict(b), rtol=1e-4, atol=1e-5)
    assert model._compiled
