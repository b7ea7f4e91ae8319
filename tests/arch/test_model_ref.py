"""ModelRef / resolve_model: every form of model reference resolves, every bad
one is a one-line WeightspaceError (exit 2 in the CLI)."""

import json
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tests.model_refs import save_tiny_gpt2
from weightspace.arch import ModelRef, ModelRefError, resolve_model
from weightspace.cli.app import app
from weightspace.errors import ConfigError, MissingFileError, StateDictError, UnknownNameError, WeightspaceError


def make_mlp(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2)), torch.randn(2, 3)


def make_no_input(width=4):
    return nn.Linear(3, width)


def make_broken(width=4):
    raise ValueError("width must be even\nsecond line")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("ref") / "gpt2"
    return d, save_tiny_gpt2(d)


# ------------------------------------------------------------ good forms
def test_registry_name_with_kwargs():
    r = resolve_model("mlp", hidden=[8])
    module, x, identity = r
    assert r.arch == "mlp" and identity == "mlp(hidden=[8])"
    assert module(x).shape[0] == x.shape[0]


def test_module_instance_and_callable():
    m = nn.Linear(3, 2)
    r = resolve_model(m, example_input=torch.randn(1, 3))
    assert r.module is m and r.identity == "module:Linear" and "Linear(" not in repr(r.ref)
    r2 = resolve_model(make_mlp, width=5)
    assert r2.module[0].out_features == 5 and r2.example_input.shape == (2, 3)


def test_factory_string_is_imported_and_seeded():
    name = f"{__name__}:make_mlp"
    sys.modules.setdefault(__name__, sys.modules[__name__])
    a, b = resolve_model(name, width=6), resolve_model(name, width=6)
    assert a.ref.kind == "factory" and a.identity == f"{name}(width=6)"
    assert torch.equal(a.module[0].weight, b.module[0].weight)  # seed 0 both times
    assert ModelRef.parse({"factory": name, "kwargs": {"width": 6}}) == a.ref


def test_hf_directory_forms(gpt2_dir):
    d, m = gpt2_dir
    for ref in (f"hf:{d}", {"hf": str(d)}, ModelRef.hf(d), d):
        r = resolve_model(ref)
        assert type(r.module).__name__ == "GPT2LMHeadModel" and r.example_input.shape == (1, 8)
        assert r.identity == f"hf:{d.resolve()}" and r.hf is not None
        assert r.module.config.use_cache is False
        with torch.no_grad():
            assert torch.equal(r.module(r.example_input).logits, m(r.example_input).logits)


def test_hf_relative_to_root(gpt2_dir):
    d, _ = gpt2_dir
    r = resolve_model("hf:gpt2", root=d.parent)
    assert r.hf.directory == d


def test_hf_vision_example_input(tmp_path):
    T = pytest.importorskip("transformers")
    cfg = T.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, num_labels=3)
    T.ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit")
    r = resolve_model(f"hf:{tmp_path / 'vit'}")
    assert r.example_input.shape == (1, 3, 16, 16) and r.example_input.is_floating_point()


def test_analyze_takes_a_resolved_hf_model(gpt2_dir):
    from weightspace.core import analyze

    d, _ = gpt2_dir
    r = resolve_model(f"hf:{d}")
    a = analyze(r.module, r.example_input)
    assert any(g.kind == "head" for g in a.spec.groups)


# ------------------------------------------------------------ bad forms
def _one_line(exc):
    assert "\n" not in str(exc) and "Sequential(" not in str(exc)
    return str(exc)


@pytest.mark.parametrize("ref, kwargs, exc_type, needle", [
    ("no_such_arch_xyz", {}, UnknownNameError, "no_such_arch_xyz"),
    ("no_such_pkg_ws.mod:fn", {}, ConfigError, "no_such_pkg_ws.mod:fn"),
    (f"{__name__}:make_mlpp", {}, ConfigError, "did you mean 'make_mlp'"),
    (f"{__name__}:make_broken", {}, ConfigError, "width must be even"),
    (f"{__name__}:make_no_input", {}, ConfigError, "example input"),
    ("not a:factory!", {}, ConfigError, "not a factory reference"),
    ("hf:", {}, ConfigError, "needs a directory"),
    ({"hf": "x", "factory": "a:b"}, {}, ConfigError, "exactly one"),
    ({"factory": "a.b:c", "kwarg": {}}, {}, ConfigError, "did you mean 'kwargs'"),
    (3.5, {}, ConfigError, "float"),
])
def test_bad_reference_is_one_line(ref, kwargs, exc_type, needle):
    with pytest.raises(exc_type) as info:
        resolve_model(ref, **kwargs)
    assert isinstance(info.value, WeightspaceError)
    assert needle in _one_line(info.value)


def test_module_without_example_input_names_the_class():
    with pytest.raises(ModelRefError, match="Sequential module"):
        resolve_model(nn.Sequential(nn.Linear(2, 2)))


def test_missing_dir_config_and_weights(tmp_path, gpt2_dir):
    with pytest.raises(MissingFileError) as info:
        resolve_model(f"hf:{tmp_path / 'nope'}")
    assert str(info.value.path) == str(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError) as info:
        resolve_model(f"hf:{tmp_path / 'empty'}")
    assert str(info.value.path).endswith("config.json")
    d, _ = gpt2_dir
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(MissingFileError, match="model.safetensors"):
        resolve_model(f"hf:{tmp_path / 'noweights'}")


def test_bad_config_names_the_field(tmp_path, gpt2_dir):
    pytest.importorskip("transformers")
    d, _ = gpt2_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((d / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["EvilRemoteModel"]}))
    with pytest.raises(ConfigError) as info:
        resolve_model(f"hf:{bad}")
    assert info.value.field == "architectures" and "config.json" in _one_line(info.value)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "no_such_type_xyz"}))
    with pytest.raises(ConfigError) as info:
        resolve_model(f"hf:{bad}")
    assert "config.json" in _one_line(info.value)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(WeightspaceError) as info:
        resolve_model(f"hf:{bad}")
    assert "config.json" in _one_line(info.value)


def test_weights_of_another_model_name_the_tensor(tmp_path, gpt2_dir):
    import shutil

    from safetensors.torch import save_file

    d, m = gpt2_dir
    shutil.copytree(d, tmp_path / "g")
    sd = {k: v.clone() for k, v in m.state_dict().items() if k != "lm_head.weight"}
    sd["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(3, 3)
    save_file(sd, str(tmp_path / "g" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(StateDictError) as info:
        resolve_model(f"hf:{tmp_path / 'g'}")
    assert info.value.field == "transformer.h.0.mlp.c_fc.weight"


def test_missing_transformers_is_a_clear_error(monkeypatch, gpt2_dir):
    d, _ = gpt2_dir
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"weightspace\[hf\]"):
        resolve_model(f"hf:{d}")


# ------------------------------------------------------------ CLI and generators
def test_graph_cli_accepts_hf_and_factory(gpt2_dir):
    d, _ = gpt2_dir
    res = CliRunner().invoke(app, ["graph", f"hf:{d}", "--no-groups"])
    assert res.exit_code == 0, res.output
    assert "head groups" in res.output and "directory's safetensors" in res.output
    res = CliRunner().invoke(app, ["graph", f"{__name__}:make_mlp", "-a", "width=7", "--no-groups"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("model, needle", [
    ("hf:/no/such/dir_ws", "/no/such/dir_ws"),
    ("no_such_pkg_ws.mod:fn", "no_such_pkg_ws.mod:fn"),
    ("no_such_arch_xyz", "no_such_arch_xyz"),
])
def test_graph_cli_bad_model_exit_2(model, needle):
    res = CliRunner().invoke(app, ["graph", model])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and needle in res.output
    assert "Traceback" not in res.output and "internal error" not in res.output


def test_hypernet_and_flow_name_the_module_class_not_its_repr():
    """A module is an architecture now; one without an example input is a
    one-line error naming its class, never its repr."""
    from weightspace.generate.checkpoint_flow import CheckpointFlow
    from weightspace.generate.hypernet import GraphHyperNetwork

    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    for call in (lambda: GraphHyperNetwork().predict(m, seed=0), lambda: CheckpointFlow(m)):
        with pytest.raises(ModelRefError) as info:
            call()
        msg = _one_line(info.value)
        assert "a Sequential module" in msg and "example_input" in msg and "Linear(" not in msg
    sd = GraphHyperNetwork().predict(m, seed=0, example_input=torch.randn(1, 2))
    assert set(sd) == set(m.state_dict())


def test_similarity_cli_takes_a_factory_and_an_hf_dir(tmp_path, gpt2_dir):
    ref = f"{__name__}:make_mlp"
    res = CliRunner().invoke(app, ["similarity", ref, ref, "--data", "random", "--max-samples", "32",
                                   "--out", str(tmp_path / "sim"), "--no-match"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "sim" / "results.json").read_text())["model_a"]["model"] == ref
    d, _ = gpt2_dir  # torch.fx cannot trace it: captured through forward hooks (tests/similarity/test_sim_cli_hf.py)
    res = CliRunner().invoke(app, ["similarity", f"hf:{d}", f"hf:{d}", "--data", "random", "--max-samples", "8",
                                   "--reduction", "pool_tokens", "--layers-a", "lm_head", "--layers-b", "lm_head",
                                   "--no-match", "--out", str(tmp_path / "sim2")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "sim2" / "results.json").read_text())["model_a"]["model"].startswith("hf:")
    # the fx-only path still refuses it with one line
    res = CliRunner().invoke(app, ["similarity", f"hf:{d}", f"hf:{d}", "--data", "random", "--capture", "fx",
                                   "--out", str(tmp_path / "sim3")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output


def test_config_without_architectures_builds_the_base_model(tmp_path, gpt2_dir):
    import shutil

    d, m = gpt2_dir
    shutil.copytree(d, tmp_path / "g")
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("architectures")
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    r = resolve_model(f"hf:{tmp_path / 'g'}")
    assert type(r.module).__name__ == "GPT2Model"  # stored names lose the 'transformer.' prefix
    assert torch.equal(r.module.h[0].mlp.c_fc.weight, m.transformer.h[0].mlp.c_fc.weight)
    stored = r.hf.to_stored(r.module, r.module.state_dict())
    assert "transformer.h.0.mlp.c_fc.weight" in stored
