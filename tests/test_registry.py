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


def test_unknown_architecture_lists_known():
    with pytest.raises(KeyError, match="cnn_small"):
        zoo.create_model("no_such_net")


def test_unknown_kwarg_is_clear():
    with pytest.raises(TypeError, match="unknown argument"):
        zoo.create_model("mlp", wdith=3)


def test_register_duplicate_is_error():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("mlp", input_shape=(2, 4))(lambda: torch.nn.Linear(4, 4))
