"""Activation capture through forward hooks on named submodules: the path
``method="auto"`` takes for models torch.fx cannot trace (every tiny Hugging
Face model here, and the nanoGPT-style module), checked against the models'
own outputs, the fx path, and the permutation symmetry of the networks."""

import pytest
import torch
from torch import nn

import zoo
from tests.hf_models import CHECKED, build, make_inputs, perturbed_model, planted
from tests.similarity._nets import ActTwice, Branchy
from tests.trace.tracekit import _forward
from weightspace.errors import TraceError
from weightspace.similarity import (
    ActivationCapture,
    SimilarityInputError,
    capturable_layers,
    capture_activations,
    linear_cka,
    model_cka_matrix,
)

#: per model: a layer inside the first block, and the module whose output is
#: the model's output (logits / last hidden state)
LAYERS = {
    "gpt2": ("transformer.h.0.mlp.c_fc", "lm_head"),
    "bert": ("encoder.layer.0.intermediate.dense", "encoder"),
    "vit": ("vit.layers.0.attention.q_proj", "classifier"),
    "resnet": ("resnet.encoder.stages.0", "classifier"),
    "llama": ("model.layers.0.mlp.gate_proj", "lm_head"),
    "nanogpt": ("transformer.h.0.mlp.c_fc", "lm_head"),
}


def _hf(name):
    if name != "nanogpt":
        pytest.importorskip("transformers")


def _no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", CHECKED)
def test_named_layers_of_hf_models_are_captured(name):
    _hf(name)
    make, _ = build(name)
    model = make(0)  # train mode: capture runs in eval mode and restores it
    x = make_inputs(name, 7)
    mid, last = LAYERS[name]
    layers = capturable_layers(model, x)
    assert mid in layers and last in layers
    assert layers.index(mid) < layers.index(last)  # the order outputs are produced
    cap = ActivationCapture(model, [mid, last])
    assert cap.method == "hooks"  # torch.fx cannot trace these models
    acts = capture_activations(model, [mid, last], x, reduction="none", batch_size=4)
    assert model.training and all(m.training for m in model.modules())
    assert _no_hooks_left(model)
    model.eval()
    assert torch.allclose(acts[last], _forward(model, (x,)), atol=1e-6)
    assert acts[mid].shape[0] == 7 and acts[mid].dtype == torch.float32
    flat = capture_activations(model, [mid, last], x, reduction="flatten")
    for k, v in flat.items():
        assert v.shape == (7, acts[k][0].numel())
        assert linear_cka(v, v) == pytest.approx(1.0, abs=1e-6), k


@pytest.mark.parametrize("name", CHECKED)
def test_cka_with_a_permuted_copy_is_one(name):
    """A spec permutation permutes the neurons of the mid layer (linear CKA
    is invariant to it) and leaves the output unchanged; another network of
    the same family is measurably different."""
    _hf(name)
    a, sd, perm, sd_p = planted(name)
    make, _ = build(name)
    model = perturbed_model(name)
    permuted = make(0).double().eval()
    permuted.load_state_dict(sd_p)
    other = perturbed_model(name, seed=1)
    mid, last = LAYERS[name]
    x = make_inputs(name, 16, seed=3)
    acts = [capture_activations(m, [mid, last], x, reduction="pool_tokens" if x.dim() == 2 else "flatten")
            for m in (model, permuted, other)]
    assert not torch.allclose(acts[0][mid], acts[1][mid])  # the neurons did move
    # float64 models; Llama still computes RMSNorm and softmax in float32
    for k in (mid, last):
        assert linear_cka(acts[0][k], acts[1][k]) == pytest.approx(1.0, abs=1e-7), k
    assert float((acts[0][last] - acts[1][last]).abs().max()) <= 1e-5
    assert linear_cka(acts[0][mid], acts[2][mid]) < 0.999


def test_model_cka_matrix_on_hf_models():
    pytest.importorskip("transformers")
    make, _ = build("gpt2")
    a, b = make(0), make(1)
    x = make_inputs("gpt2", 12)
    layers = ["transformer.h.0", "transformer.h.1.mlp.c_fc", "lm_head"]
    res = model_cka_matrix(a, a, x, layers_a=layers, layers_b=layers, reduction="pool_tokens", batch_size=5)
    assert list(res.layers_a) == layers
    assert res.values.shape == (3, 3) and res.n_samples == 12
    for i in range(3):
        assert res.values[i, i] == pytest.approx(1.0, abs=1e-6)
    res_ab = model_cka_matrix(a, b, x, layers_a=layers, layers_b=layers, reduction="pool_tokens")
    assert res_ab.values[0, 0] < 0.999


def test_hooks_match_fx_on_traceable_models():
    for arch in ("cnn_small", "token_transformer"):
        model = zoo.create_model(arch, seed=0)
        x = zoo.example_input(arch, batch_size=7, seed=1)
        fx_layers = capturable_layers(model, x, modules_only=True, method="fx")
        hook_layers = capturable_layers(model, x, method="hooks")
        common = [k for k in fx_layers if k in hook_layers]
        assert len(common) >= 4
        got_fx = capture_activations(model, common, x, reduction="none", method="fx")
        got_hooks = capture_activations(model, common, x, reduction="none", method="hooks")
        for k in common:
            assert torch.equal(got_fx[k], got_hooks[k]), (arch, k)
        assert ActivationCapture(model, fx_layers).method == "fx"  # auto prefers fx


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        y.relu_()  # in place, after the module returned
        return y + x


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.act = nn.Tanh()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 1e9:  # data-dependent control flow: fx cannot trace this
            x = -x
        return self.head(self.act(self.block(x)))


def test_auto_falls_back_to_hooks_and_copies_outputs():
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(5, 4)
    with pytest.raises(TraceError, match="control flow"):
        ActivationCapture(net, ["block.lin"], method="fx")
    cap = ActivationCapture(net, ["block.lin", "block", "head"])
    assert cap.method == "hooks"
    acts = cap.activations(x, "none")
    lin = net.block.lin(x)
    assert torch.allclose(acts["block.lin"], lin)  # not the in-place relu'd tensor
    assert (acts["block.lin"] < 0).any()
    assert torch.allclose(acts["block"], lin.relu() + x)
    assert torch.allclose(acts["head"], net(x))
    assert capturable_layers(net, x) == ["block.lin", "block", "act", "head"]
    assert capturable_layers(net) == ["block", "block.lin", "act", "head"]  # named_modules order


def test_auto_uses_hooks_for_a_submodule_fx_traces_through():
    net = nn.Sequential(_Block(), nn.Linear(4, 3))
    x = torch.randn(6, 4)
    assert "0" not in capturable_layers(net)  # fx inlines the custom block
    cap = ActivationCapture(net, ["0", "1"])
    assert cap.method == "hooks"
    acts = cap.activations(x, "none")
    assert torch.allclose(acts["1"], net(x))
    assert ActivationCapture(net, ["0.lin", "1"]).method == "fx"


def test_hooks_errors_name_the_layer():
    torch.manual_seed(0)
    net = _Net()
    with pytest.raises(SimilarityInputError, match=r"'block\.lnn'.*did you mean.*block\.lin"):
        ActivationCapture(net, ["block.lnn"])
    with pytest.raises(SimilarityInputError, match="method must be one of"):
        ActivationCapture(net, ["head"], method="hook")

    tw = ActTwice()
    with pytest.raises(SimilarityInputError, match=r"'act' ran 2 times"):
        capture_activations(tw, ["act"], torch.randn(4, 3), method="hooks")
    assert capturable_layers(tw, torch.randn(4, 3), method="hooks") == ["lin"]
    assert _no_hooks_left(tw)

    unused = ActTwice()
    unused.spare = nn.Linear(3, 3)  # a submodule forward never calls
    with pytest.raises(SimilarityInputError, match="'spare' did not run"):
        capture_activations(unused, ["spare"], torch.randn(4, 3), method="hooks")

    # fx fails and there is no submodule to hook: the fx error, plus why hooks cannot help
    with pytest.raises(TraceError, match="control flow.*no submodules"):
        ActivationCapture(Branchy())
    with pytest.raises(TraceError, match="no submodules"):
        capturable_layers(Branchy())


def test_tuple_and_mapping_outputs_give_their_first_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return None, x * 2, x

    class Mapping(nn.Module):
        def forward(self, x):
            return {"mask": None, "hidden": x + 1}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair, self.mapping = Pair(), Mapping()

        def forward(self, x):
            return self.mapping(self.pair(x)[1])["hidden"]

    x = torch.randn(3, 2)
    acts = capture_activations(Net(), ["pair", "mapping"], x, reduction="none", method="hooks")
    assert torch.equal(acts["pair"], x * 2) and torch.equal(acts["mapping"], x * 2 + 1)


def test_a_module_under_two_paths_answers_to_both():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.alias = self.lin  # same module, second path (called once)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.lin(x))

    net = Net()
    x = torch.randn(4, 3)
    assert capturable_layers(net, x, method="hooks") == ["lin", "act"]
    acts = capture_activations(net, ["lin", "alias"], x, reduction="none", method="hooks")
    assert torch.equal(acts["lin"], acts["alias"]) and torch.allclose(acts["lin"], net.lin(x))
