"""weightspace.arch: class registration, ArchSpec identity, unknown-name errors,
the graph-template cache keyed by ArchSpec, and the deprecated zoo aliases."""

import importlib
import sys
import warnings

import pytest
import torch
from torch import nn

import weightspace.arch as arch
from weightspace.arch import ArchSpec
from weightspace.arch.registry import _REGISTRY
from weightspace.errors import UnknownNameError, WeightspaceError


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards."""
    arch.list_models()  # the built-ins first, so they are not taken for the test's
    before = set(_REGISTRY)
    yield
    for k in set(_REGISTRY) - before:
        del _REGISTRY[k]


def test_a_class_registers_itself_with_its_init_signature(scratch_names):
    @arch.register_model("t_tiny", input_shape=lambda kw: (2, kw["n_in"], kw["size"]), input_kwargs={"size": 5})
    class Tiny(nn.Module):
        """A tiny test network."""

        def __init__(self, n_in: int = 3, width: int = 4) -> None:
            super().__init__()
            self.fc = nn.Linear(n_in, width)

        def forward(self, x):
            return self.fc(x.mean(-1))

    assert arch.get_model_info("t_tiny").factory is Tiny
    assert arch.get_model_info("t_tiny").description == "A tiny test network."
    assert arch.get_model_info("t_tiny").resolve_kwargs() == {"n_in": 3, "width": 4, "size": 5}
    m = arch.create_model("t_tiny", seed=0, width=6, size=9)  # size only shapes the example input
    assert isinstance(m, Tiny) and m.fc.out_features == 6
    assert arch.example_input("t_tiny", size=9).shape == (2, 3, 9)
    with pytest.raises(TypeError, match="did you mean 'width'"):
        arch.create_model("t_tiny", widht=2)


class _WithWidth(nn.Module):
    def __init__(self, width: int = 2) -> None:
        super().__init__()


def test_input_kwargs_may_not_shadow_init_arguments(scratch_names):
    with pytest.raises(ValueError, match=r"\['width'\]"):
        arch.register_model("t_clash", input_shape=(2, 3), input_kwargs={"width": 1})(_WithWidth)
    assert "t_clash" not in _REGISTRY


def test_builtin_models_are_classes_without_repeated_factories():
    for name in ("cnn_small", "cnn1d", "mobilenet_tiny", "mlp", "siren", "vit_tiny", "token_transformer", "cnn_small_tf"):
        assert isinstance(arch.get_model_info(name).factory, type), name
    assert arch.get_model_info("cnn_small").resolve_kwargs()["image_size"] == 8
    # image_size shapes the example input only; SmallCNN.__init__ would reject it
    assert arch.create_model("cnn_small", image_size=28).classifier.in_features == 16
    assert arch.example_input("cnn_small", image_size=28).shape == (2, 1, 28, 28)


def test_unknown_architecture_is_one_line_keyerror_with_did_you_mean():
    with pytest.raises(UnknownNameError) as info:
        arch.create_model("resnet2O")
    e = info.value
    assert isinstance(e, KeyError) and isinstance(e, WeightspaceError)
    msg = str(e)
    assert "\n" not in msg and "did you mean 'resnet20'" in msg and "cnn_small" in msg
    assert e.args[0] == msg  # callers that read exc.args[0] get the message, not a repr


def test_archspec_is_canonical_and_hashable():
    a = ArchSpec.of("mlp", hidden=[32])
    b = ArchSpec("mlp", {"hidden": (32,), "activation": "relu"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert dict(a.kwargs)["in_features"] == 64  # defaults filled in
    assert a.resolved_kwargs["hidden"] == [32]
    assert a.arch_kwargs == {"hidden": [32]} and a.label == "mlp(hidden=32)"
    assert a != ArchSpec.of("mlp") and ArchSpec.of("mlp").label == "mlp"
    assert ArchSpec.of("mlp", hidden=[64, 64]) == ArchSpec.of("mlp")


def test_archspec_json_round_trip_and_build():
    a = ArchSpec.of("cnn_small", width=4, depth=2)
    text = a.to_json()
    assert '"width": 4' in text and '"in_channels": 1' in text  # every argument is written
    assert ArchSpec.from_json(text) == a
    assert ArchSpec.from_dict({"name": "cnn_small", "kwargs": {"width": 4, "depth": 2}}) == a
    m1, m2 = a.build(seed=3), arch.create_model("cnn_small", seed=3, width=4, depth=2)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert a.input_shape() == (1, 8, 8) and a.example_input(batch_size=3).shape == (3, 1, 8, 8)


def test_archspec_rejects_bad_input_with_clear_errors():
    with pytest.raises(KeyError, match="unknown architecture 'mpl'; did you mean 'mlp'"):
        ArchSpec.of("mpl")
    with pytest.raises(TypeError, match="unknown argument"):
        ArchSpec.of("mlp", hiddn=[3])
    with pytest.raises(TypeError, match="hidden=.* is not hashable"):
        ArchSpec.of("mlp", hidden=torch.ones(2))
    with pytest.raises(TypeError, match="activation=.* is not hashable"):
        ArchSpec.of("mlp", activation={"a": [set()]})
    from weightspace.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be parsed"):
        ArchSpec.from_json("{not json")
    with pytest.raises(ConfigError) as info:
        ArchSpec.from_dict({"name": "mlp", "kwarg": {}})
    assert info.value.field == "kwarg"


def test_graph_template_is_shared_by_equal_specs():
    from weightspace import graph_template

    t = graph_template("mlp", hidden=[32])
    assert graph_template("mlp", hidden=(32,)) is t
    assert graph_template("mlp", hidden=[32], activation="relu") is t
    assert graph_template(ArchSpec.of("mlp", hidden=[32])) is t
    assert graph_template("mlp", hidden=[16]) is not t


def test_generate_archspec_is_the_arch_archspec():
    from weightspace.generate import ArchSpec as GenSpec, as_arch

    g = GenSpec.of("mlp", hidden=[32])
    assert isinstance(g, ArchSpec) and g == ArchSpec.of("mlp", hidden=[32])
    assert as_arch(ArchSpec.of("mlp", hidden=[32])) == g and isinstance(as_arch(ArchSpec.of("mlp")), GenSpec)


@pytest.mark.parametrize("module", ["zoo.registry", "zoo.models", "zoo.tf_compat"])
def test_zoo_aliases_warn_and_re_export(module):
    sys.modules.pop(module, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(module)
    assert any(issubclass(w.category, DeprecationWarning) and "weightspace.arch" in str(w.message) for w in caught)
    if module == "zoo.registry":
        assert mod.create_model is arch.create_model and mod.register_model is arch.register_model
    if module == "zoo.models":
        import weightspace.arch.models.cnn as cnn

        assert importlib.import_module("zoo.models.cnn") is cnn
    if module == "zoo.tf_compat":
        from weightspace.arch.models.tf_compat import tf_same_pads

        assert mod.tf_same_pads is tf_same_pads


def test_zoo_top_level_names_are_the_arch_ones_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        import zoo

        assert zoo.create_model is arch.create_model and zoo.list_models() == arch.list_models()
        assert zoo.register_model is arch.register_model and zoo.example_input is arch.example_input
