import pytest
import torch

import zoo


@pytest.mark.parametrize("name", zoo.list_models())
def test_registered_models_run(name):
    model = zoo.create_model(name, seed=0).eval()
    x = zoo.example_input(name)
    with torch.no_grad():
        y = model(x)
    assert y.shape[0] == x.shape[0]
    assert torch.isfinite(y).all()


def test_seeded_creation_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = zoo.create_model("mlp", seed=7)
    after = torch.rand(1)
    b = zoo.create_model("mlp", seed=7)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_small_cnn_zoo_parameter_count():
    m = zoo.create_model("cnn_small")
    assert sum(p.numel() for p in m.parameters()) == 4970


@pytest.mark.parametrize("name, kwargs, stack, layout", [
    # layer -> activation (-> dropout): stored zoos name their weights by these positions
    ("cnn_small", {"depth": 2, "dropout": 0.1, "activation": "tanh"}, "features",
     ["Conv2d", "Tanh", "Dropout", "Conv2d", "Tanh", "Dropout"]),
    ("cnn1d", {"depth": 2}, "features", ["Conv1d", "ReLU", "Conv1d", "ReLU"]),
    ("mlp", {"hidden": [4, 4], "dropout": 0.1}, "layers",
     ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]),
    ("mlp", {"hidden": [4, 4], "bias": False}, "layers", ["Linear", "ReLU", "Linear", "ReLU", "Linear"]),
])
def test_stacked_models_keep_their_layer_layout(name, kwargs, stack, layout):
    model = zoo.create_model(name, **kwargs)
    assert [type(m).__name__ for m in getattr(model, stack)] == layout
    weights = [f"{stack}.{i}.weight" for i, t in enumerate(layout) if t.startswith(("Conv", "Linear"))]
    assert [k for k in model.state_dict() if k.startswith(stack) and k.endswith(".weight")] == weights
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear)) == (kwargs.get("bias") is False)


def test_resnets_keep_their_stage_layout():
    sd = zoo.create_model("resnet20").state_dict()
    assert [k for k in sd if k.endswith("conv1.weight")] == [
        "conv1.weight", *(f"layer{s}.{b}.conv1.weight" for s in (1, 2, 3) for b in range(3))
    ]
    assert sd["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)  # stride-2 block opens the stage
    assert "layer2.0.downsample.0.weight" in sd and "layer1.0.downsample.0.weight" not in sd
    sd50 = zoo.create_model("resnet50").state_dict()
    assert [sum(k.startswith(f"layer{s}.") and k.endswith("conv1.weight") for k in sd50) for s in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert sd50["fc.weight"].shape == (1000, 2048)


def test_unknown_architecture_lists_known():
    with pytest.raises(KeyError, match="cnn_small"):
        zoo.create_model("no_such_net")


def test_unknown_kwarg_is_clear():
    with pytest.raises(TypeError, match="unknown argument"):
        zoo.create_model("mlp", wdith=3)


def test_register_duplicate_is_error():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("mlp", input_shape=(2, 4))(lambda: torch.nn.Linear(4, 4))
