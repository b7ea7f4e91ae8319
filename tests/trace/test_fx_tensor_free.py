"""fx front end: tensor-free calls (``torch.arange(T)``, ``math.sqrt(d)``,
``torch.tril(torch.ones(T, T))``) are constants; fx failures get a hint that
fits their cause."""

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.errors import TraceError
from weightspace.trace import trace

from tests.trace.tracekit import DataDependent, NanoGPT, OneLinear, check_model


@pytest.mark.parametrize("flash", [False, True])
def test_nanogpt_traces_with_fx(flash):
    torch.manual_seed(0)
    m = NanoGPT(flash=flash)
    a, _ = check_model(m, m._clone, (torch.randint(0, 100, (2, 8)),), tracer="fx")
    assert a.computation_graph.fx_graph is not None  # really the fx front end
    # tied lm_head / wte: one tensor acted on along both roles
    cg = a.computation_graph
    assert cg.aliases["lm_head.weight"] == cg.aliases["transformer.wte.weight"]
    residual = max(a.spec.groups, key=lambda g: sum(ax.param.endswith("ln_1.weight") for ax in g.axes))
    params = {ax.param for ax in residual.axes}
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.wpe.weight"} <= params
    # the causal-mask buffer has no neuron axes
    assert "transformer.h.0.attn.bias" not in cg.param_refs


class ScalarMath(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        import math

        n = x.size(-1)
        scale = math.sqrt(n) * math.log(2.0)
        pos = torch.arange(n, dtype=x.dtype) * 0.0
        mask = torch.triu(torch.full((n, n), 1.0), diagonal=1).sum()
        return self.out(torch.relu(self.fc(x + pos) / scale)) + mask * 0.0


def test_tensor_free_calls_are_constants():
    torch.manual_seed(0)
    m = ScalarMath()
    a, _ = check_model(m, ScalarMath, (torch.randn(3, 6),), tracer="fx")
    assert sorted(g.size for g in a.spec.groups) == [5]


class FloatOfSize(OneLinear):
    def forward(self, x):
        return self.fc(x) / float(x.shape[-1])


def test_fx_hint_names_the_cause():
    with pytest.raises(TraceError) as exc:
        trace(FloatOfSize(), torch.randn(2, 4))
    msg = str(exc.value)
    assert "FloatOfSize" in msg and "control flow" not in msg and "tracer='export'" in msg
    with pytest.raises(TraceError) as exc:
        trace(DataDependent(), torch.randn(2, 4))
    assert "control flow" in str(exc.value)


def test_auto_falls_back_to_export():
    m = FloatOfSize()
    spec = ws.permutation_spec(m, torch.randn(2, 4))  # fx fails, export works
    assert spec.param_axes["fc.weight"]
