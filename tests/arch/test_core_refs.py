"""``weightspace.analyze`` / ``permutation_spec`` / ``parameter_graph`` /
``graph_template`` take any model reference directly (core.py), the example
input of a Hugging Face model coming from its config."""

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.arch import ModelRefError
from weightspace.errors import ConfigError
from tests.model_refs import bad_references, save_tiny_gpt2

FACTORY = f"{__name__}:make_mlp"


def make_mlp(width=5):
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2)), torch.randn(2, 3)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("core") / "gpt2"
    return d, save_tiny_gpt2(d)


def test_analyze_hf_directory_string(gpt2):
    d, m = gpt2
    a = ws.analyze(f"hf:{d}")
    assert a.example_input.shape == (1, 8) and a.example_input.dtype == torch.int64
    assert a.spec.summary() == ws.analyze(m).spec.summary()
    spec = ws.permutation_spec(f"hf:{d}")
    assert spec.summary() == a.spec.summary()


def test_parameter_graph_of_hf_reference_holds_the_directory_weights(gpt2):
    d, m = gpt2
    g = ws.parameter_graph(f"hf:{d}")
    assert torch.equal(g.values, ws.parameter_graph(m.state_dict(), arch=f"hf:{d}").values)
    sd = g.to_state_dict()
    assert torch.equal(sd["transformer.h.0.mlp.c_fc.weight"], m.state_dict()["transformer.h.0.mlp.c_fc.weight"])
    # the template is cached per reference
    assert ws.graph_template(f"hf:{d}") is ws.graph_template({"hf": str(d)})


def test_factory_reference_with_kwargs():
    a = ws.analyze(FACTORY, arch_kwargs={"width": 7})
    assert a.spec.summary()["neurons"] == 3 + 7 + 2
    g = ws.parameter_graph(FACTORY, width=7)
    assert g.template is ws.graph_template(FACTORY, width=7)
    sd = make_mlp(7)[0].state_dict()
    assert torch.equal(ws.parameter_graph(sd, arch=FACTORY, width=7).to_state_dict()["0.weight"], sd["0.weight"])


def test_hf_module_needs_no_example_input(gpt2):
    _, m = gpt2
    assert ws.analyze(m).example_input.shape == (1, 8)


def test_bad_references_are_one_line_errors(tmp_path):
    cases = bad_references(tmp_path, __name__) + [(3, ModelRefError, "cannot name a model with a int")]
    for ref, exc, says in cases:
        for fn in (ws.analyze, ws.permutation_spec):
            with pytest.raises(exc, match=says) as e:
                fn(ref)
            assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="a state_dict needs arch="):
        ws.parameter_graph(make_mlp()[0].state_dict())
