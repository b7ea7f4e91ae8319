"""The two captures of the ``torch.export`` front end (``make_fx`` alone,
the default, and ``torch.export.export``) give the same ComputationGraph,
spec and parameter graph; ``"auto"`` falls back to ``torch.export``."""

import dataclasses

import pytest
import torch
from torch import nn

from weightspace.errors import ConfigError, TraceError
from weightspace.graph import build_template
from weightspace.symmetry import build_spec
from weightspace.trace import export as E
from weightspace.trace.export import trace_export
from weightspace.trace.structure import resolve

from tests.hf_models import build
from tests.trace.tracekit import DataDependent


def _differing(a, b) -> list[str]:
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


@pytest.mark.parametrize("name", ["gpt2", "llama", "nanogpt"])
def test_make_fx_capture_equals_export(name):
    if name != "nanogpt":
        pytest.importorskip("transformers")
    make, x = build(name)
    m = make(0).eval()
    slow = trace_export(m, x, capture="export")
    fast = trace_export(m, x, capture="make_fx")
    assert _differing(slow, fast) == []  # state, refs, ops, module paths, input names
    assert fast.ops == slow.ops and len(fast.ops) > 20
    st_s, st_f = resolve(slow), resolve(fast)
    spec_s, spec_f = build_spec(slow, st_s), build_spec(fast, st_f)
    assert spec_f == spec_s
    g_s = build_template(slow, spec_s, st_s).graph(m.state_dict())
    g_f = build_template(fast, spec_f, st_f).graph(m.state_dict())
    assert torch.equal(g_f.edge_index, g_s.edge_index)
    assert torch.equal(g_f.values, g_s.values)
    assert torch.equal(g_f.template.node_type, g_s.template.node_type)


def test_auto_capture_falls_back_to_export(monkeypatch):
    pytest.importorskip("transformers")
    make, x = build("gpt2")
    m = make(0).eval()
    calls = []

    def broken(*a, **k):
        calls.append("make_fx")
        raise RuntimeError("capture failed")

    monkeypatch.setattr(E, "_make_fx_capture", broken)
    cg = trace_export(m, x)  # capture="auto"
    assert calls == ["make_fx"]
    assert cg.ops == trace_export(m, x, capture="export").ops
    with pytest.raises(RuntimeError, match="capture failed"):
        trace_export(m, x, capture="make_fx")


def test_kwarg_input_names_match_export():
    class TwoIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(5, 3)

        def forward(self, x, extra=None):
            return self.a(x) + self.b(extra["y"])

    m = TwoIn()
    x = {"x": torch.randn(2, 4), "extra": {"y": torch.randn(2, 5)}}
    slow = trace_export(m, x, capture="export")
    fast = trace_export(m, x, capture="make_fx")
    assert _differing(slow, fast) == []
    assert {b.producer for b in fast.state.blocks if b.kind == "input"} >= {"x[1]", "extra_y[1]"}


def test_unknown_capture_is_config_error():
    with pytest.raises(ConfigError, match="capture"):
        trace_export(nn.Linear(2, 2), torch.randn(1, 2), capture="dynamo")


def test_data_dependent_module_still_names_export_error():
    with pytest.raises(TraceError, match="torch.export"):
        trace_export(DataDependent(), torch.randn(2, 4))
