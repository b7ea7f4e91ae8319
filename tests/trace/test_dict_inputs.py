"""Example inputs given as a mapping of keyword inputs (``{"input_ids": ...,
"attention_mask": ...}``) or a tuple of positional ones reach both front
ends, ``analyze`` and ``permutation_spec``."""

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.errors import ConfigError, TraceError
from weightspace.symmetry import apply_permutation, random_permutation
from weightspace.trace import split_inputs, trace_module


class TwoInputs(nn.Module):
    """forward(x, y) with inputs of different widths, so a swapped binding fails."""

    def __init__(self):
        super().__init__()
        self.fx, self.fy = nn.Linear(3, 8), nn.Linear(5, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x, y=None, scale: float = 1.0):
        h = self.fx(x)
        if y is not None:
            h = h + self.fy(y)
        return self.out(torch.relu(h) * scale)


def _xy():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, generator=g), torch.randn(2, 5, generator=g)


def test_split_inputs():
    x, y = _xy()
    assert split_inputs(x) == ((x,), {})
    assert split_inputs((x, y)) == ((x, y), {})
    assert split_inputs([x]) == ((x,), {})
    args, kwargs = split_inputs({"y": y, "x": x})
    assert args == () and list(kwargs) == ["y", "x"]
    with pytest.raises(ConfigError, match="strings"):
        split_inputs({0: x})


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_mapping_binds_by_name_in_any_order(tracer):
    x, y = _xy()
    m = TwoInputs().eval()
    ref = trace_module(m, (x, y), tracer=tracer)
    cg = trace_module(m, {"y": y, "x": x}, tracer=tracer)  # reversed order
    assert sorted(cg.input_shapes) == sorted(ref.input_shapes) == [(2, 3), (2, 5)]
    assert [g.size for g in ws.permutation_spec(m, {"y": y, "x": x}, tracer=tracer).groups] == [
        g.size for g in ws.permutation_spec(m, (x, y), tracer=tracer).groups
    ]
    # the y branch is traced: its weight carries the hidden group
    spec = ws.permutation_spec(m, {"x": x, "y": y}, tracer=tracer)
    assert any(ax.param == "fy.weight" for g in spec.groups for ax in g.axes)
    # a mapping that leaves y out traces the other branch only
    spec_x = ws.permutation_spec(m, {"x": x}, tracer=tracer)
    assert not any(ax.param == "fy.weight" for g in spec_x.groups for ax in g.axes)


def test_fx_names_an_unknown_keyword():
    x, _ = _xy()
    with pytest.raises(TraceError, match="no argument 'z'"):
        trace_module(TwoInputs(), {"x": x, "z": x}, tracer="fx")


def test_export_names_an_unknown_keyword():
    x, _ = _xy()
    with pytest.raises(TraceError, match="torch.export could not export"):
        trace_module(TwoInputs(), {"x": x, "z": x}, tracer="export")


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_hf_input_ids_and_attention_mask(name):
    pytest.importorskip("transformers")
    from tests.hf_models import build

    make, (ids,) = build(name)
    model = make(0).double().eval()
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # padding: the mask changes the output
    batch = {"input_ids": ids, "attention_mask": mask}
    a = ws.analyze(model, batch)
    assert a.computation_graph.input_shapes == [tuple(ids.shape), tuple(mask.shape)]
    assert [g.size for g in a.spec.groups] == [g.size for g in ws.permutation_spec(model, ids).groups]

    def out(m, **inputs):
        with torch.no_grad():
            o = m(**(inputs or batch))
        return o.logits if hasattr(o, "logits") else o.last_hidden_state

    y = out(model)
    assert (out(model, input_ids=ids) - y).abs().max() > 1e-6  # the mask is in use
    other = make(1).double().eval()
    other.load_state_dict(apply_permutation(model.state_dict(), a.spec, random_permutation(a.spec, seed=0)))
    assert (out(other) - y).abs().max().item() <= 1e-10


def test_export_leaves_torch_fx_config_as_it_was():
    # the export front end switches node stack traces off only while exporting
    x, _ = _xy()
    before = torch.fx.config.do_not_emit_stack_traces
    trace_module(TwoInputs(), (x,), tracer="export")
    assert torch.fx.config.do_not_emit_stack_traces == before
    with pytest.raises(TraceError):
        trace_module(TwoInputs(), {"x": x, "z": x}, tracer="export")
    assert torch.fx.config.do_not_emit_stack_traces == before
