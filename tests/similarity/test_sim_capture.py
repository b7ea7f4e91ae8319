"""Activation capture through torch.fx on registered architectures, checked
against forward hooks (used here only as an independent reference)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo
from tests.similarity._nets import ActTwice, Branchy
from weightspace.errors import TraceError
from weightspace.similarity import (
    ActivationCapture,
    SimilarityInputError,
    capturable_layers,
    capture_activations,
    iter_activations,
    MinibatchCKAAccumulator,
    cka_matrix,
    model_cka_matrix,
)
from weightspace.similarity.capture import batches

SMALL = {"resnet20": {"image_size": 8}}


def make(name, seed=0):
    model = zoo.create_model(name, seed=seed)
    x = zoo.example_input(name, batch_size=7, seed=1, **SMALL.get(name, {}))
    return model, x


def hook_outputs(model, paths, x):
    out, handles = {}, []
    for p in paths:
        handles.append(
            model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: out.__setitem__(p, o))
        )
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, y


@pytest.mark.parametrize("name", ["mlp", "cnn_small", "resnet20", "vit_tiny", "token_transformer", "mobilenet_tiny"])
def test_module_outputs_match_forward_hooks(name):
    model, x = make(name)
    model.train()  # capture must run in eval mode and restore the flags
    layers = capturable_layers(model, x, modules_only=True)
    assert len(layers) >= 3
    acts = capture_activations(model, layers, x, reduction="none")
    model.eval()
    ref, y = hook_outputs(model, layers, x)
    for k in layers:
        assert torch.allclose(acts[k], ref[k], atol=1e-6), k
        assert acts[k].shape[0] == 7
    last = capturable_layers(model, x)[-1]
    full = capture_activations(model, [last], x)[last]
    assert torch.allclose(full, y.reshape(7, -1), atol=1e-6)


def test_training_flags_and_parameters_untouched():
    model, x = make("resnet20")
    model.train()
    model.layer2.eval()  # mixed flags must be restored exactly
    flags = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    capture_activations(model, ["layer1.0.bn1", "relu_3"], x)
    assert flags == {n: m.training for n, m in model.named_modules()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm running stats unchanged (eval mode)
    assert not any(m._forward_hooks for m in model.modules())


def test_function_nodes_resnet_relu_and_add():
    model, x = make("resnet20")
    model.eval()
    layers = capturable_layers(model, x)
    assert "relu" in layers and "add" in layers and "flatten" in layers
    acts = capture_activations(model, ["relu", "add"], x, reduction="none")
    with torch.no_grad():
        stem = torch.relu(model.bn1(model.conv1(x)))
        blk = model.layer1[0]
        add = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(stem))))) + stem
    assert torch.allclose(acts["relu"], stem, atol=1e-6)
    assert torch.allclose(acts["add"], add, atol=1e-5)


def test_only_needed_part_of_the_network_runs():
    model, x = make("mlp")
    called = []
    handles = [
        model.get_submodule(p).register_forward_pre_hook(lambda m, i, p=p: called.append(p))
        for p in ("layers.0", "layers.2", "layers.4")
    ]
    try:
        cap = ActivationCapture(model, ["layers.1"])
        out = cap.activations(x)
    finally:
        for h in handles:
            h.remove()
    assert called == ["layers.0"]  # dead code after the requested layer is removed
    assert set(out) == {"layers.1"} and out["layers.1"].shape == (7, 64)


def test_shared_module_called_twice_is_listed_per_call():
    net = ActTwice()
    layers = capturable_layers(net)
    assert layers == ["act", "lin", "act_1"]
    x = torch.randn(5, 3)
    acts = capture_activations(net, ["act", "act_1"], x)
    assert torch.allclose(acts["act"], torch.relu(x))
    assert torch.allclose(acts["act_1"], net(x))


def test_reductions():
    model, x = make("cnn_small")
    acts = {r: capture_activations(model, ["features.0"], x, reduction=r)["features.0"]
            for r in ("flatten", "pool_spatial", "none")}
    assert acts["none"].shape == (7, 16, 4, 4)
    assert acts["flatten"].shape == (7, 256)
    assert torch.allclose(acts["pool_spatial"], acts["none"].mean(dim=(2, 3)))
    vit, xv = make("vit_tiny")
    t = capture_activations(vit, ["blocks.0.norm1"], xv, reduction="pool_tokens")["blocks.0.norm1"]
    assert t.shape == (7, 32)
    c = capture_activations(model, ["features.0"], x, reduction=lambda a: a[:, 0].reshape(a.shape[0], -1))
    assert c["features.0"].shape == (7, 16)
    with pytest.raises(SimilarityInputError, match="reduction"):
        capture_activations(model, ["features.0"], x, reduction="max")


def test_data_forms_batching_and_max_samples():
    model, _ = make("mlp")
    x = torch.randn(50, 64)
    ref = capture_activations(model, ["layers.1"], x, batch_size=50)["layers.1"]
    loader = DataLoader(TensorDataset(x, torch.zeros(50)), batch_size=16)
    for data in (x, x.numpy(), loader, [x[:20], x[20:]], (b for b in x.split(7))):
        got = capture_activations(model, ["layers.1"], data, batch_size=16)["layers.1"]
        assert torch.allclose(got, ref, atol=1e-6)
    sizes = [a["layers.1"].shape[0] for a in iter_activations(model, ["layers.1"], x, batch_size=16, max_samples=40)]
    assert sizes == [16, 16, 8]
    assert list(b.shape[0] for b in batches(x, 20)) == [20, 20, 10]
    # float64 numpy input is cast to the model's dtype
    assert capture_activations(model, ["layers.0"], x.double().numpy())["layers.0"].dtype == torch.float32


def test_capturable_layers_filters_non_activations():
    vit, x = make("vit_tiny")
    every = capturable_layers(vit)
    kept = capturable_layers(vit, x)
    assert len(kept) < len(every)
    dropped = set(every) - set(kept)
    assert any(k.startswith("getattr") or k.startswith("size") for k in dropped)
    assert any(k.startswith("permute") for k in dropped)  # head-major (3, B, ...) reshapes
    tok, xt = make("token_transformer")
    assert "attn.0" in capturable_layers(tok) and "attn.0" not in capturable_layers(tok, xt)


def test_clear_errors():
    model, x = make("mlp")
    with pytest.raises(SimilarityInputError, match="did you mean"):
        ActivationCapture(model, ["layers.9", "layer.1"])
    with pytest.raises(SimilarityInputError, match="more than once"):
        ActivationCapture(model, ["layers.1", "layers.1"])
    with pytest.raises(SimilarityInputError, match="empty"):
        ActivationCapture(model, [])
    tok, xt = make("token_transformer")
    with pytest.raises(SimilarityInputError, match="getitem"):
        capture_activations(tok, ["attn.0"], xt)
    vit, xv = make("vit_tiny")
    permute = next(k for k in capturable_layers(vit) if k.startswith("permute"))
    with pytest.raises(SimilarityInputError, match="batch size"):
        capture_activations(vit, [permute], xv)
    with pytest.raises(SimilarityInputError, match="no batches"):
        capture_activations(model, None, [])

    with pytest.raises(TraceError, match="control flow"):
        ActivationCapture(Branchy(), None)


def test_model_cka_matrix_linear_and_minibatch():
    a, _ = make("mlp", 0)
    b, _ = make("mlp", 1)
    x = torch.randn(203, 64, generator=torch.Generator().manual_seed(0))
    m = model_cka_matrix(a, b, x, batch_size=50)
    assert m.layers_a == ("layers.0", "layers.1", "layers.2", "layers.3", "layers.4")
    acts_a = capture_activations(a, m.layers_a, x)
    acts_b = capture_activations(b, m.layers_b, x)
    np.testing.assert_allclose(m.values, cka_matrix(acts_a, acts_b).values, rtol=1e-6)
    # exact self-comparison: unit diagonal
    s = model_cka_matrix(a, None, x, batch_size=64)
    np.testing.assert_allclose(np.diag(s.values), 1.0, atol=1e-9)
    # minibatch: 203 = 4 x 50 + 3 -> the last 3 samples are skipped with a warning
    with pytest.warns(UserWarning, match="skipped 3"):
        mb = model_cka_matrix(a, b, x, batch_size=50, method="minibatch", layers_a=["layers.1"], layers_b=["layers.1", "layers.3"])
    assert mb.values.shape == (1, 2) and mb.extra["skipped_samples"] == 3 and mb.n_samples == 200
    ref = MinibatchCKAAccumulator()
    for i in range(0, 200, 50):
        ref.update({"layers.1": acts_a["layers.1"][i : i + 50]},
                   {k: acts_b[k][i : i + 50] for k in ("layers.1", "layers.3")})
    np.testing.assert_allclose(mb.values, ref.result().values, rtol=1e-6)
    lim = model_cka_matrix(a, b, x, max_samples=30, batch_size=16)
    assert lim.n_samples == 30
    with pytest.raises(SimilarityInputError, match="method"):
        model_cka_matrix(a, b, x, method="rbf")
