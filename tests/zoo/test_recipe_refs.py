"""Zoo recipes and loaders name architectures by any model reference:
``arch: pkg.mod:factory`` / ``{factory: ..., kwargs: ...}`` / ``hf:DIR`` /
``{hf: DIR}`` (parsed by ``ModelRef.parse`` as the merge YAML is). Every bad
reference is a one-line RecipeError naming ``arch`` (exit 2 in the CLI)."""

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import zoo
from weightspace.cli import app
from tests.model_refs import bad_references, one_error_line
from zoo.errors import RecipeError, ZooFormatError
from zoo.recipe import Recipe

from .conftest import tiny_recipe_dict

FACTORY = f"{__name__}:make_mlp"
runner = CliRunner()


def make_mlp(width=4, num_classes=10):
    """(module, example input): the generators trace it with the input."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
    return net, torch.zeros(2, 1, 8, 8)


def _recipe(arch, model=None, **kw):
    return tiny_recipe_dict(num_members=2, epochs=1, arch=arch, model=model or {},
                            search={"method": "grid", "seeds": 2, "space": {}}, **kw)


def test_factory_mapping_joins_model_kwargs_and_round_trips():
    r = Recipe.from_dict(_recipe({"factory": FACTORY, "kwargs": {"width": 3}}))
    assert r.arch == FACTORY and r.model == {"width": 3}
    assert Recipe.from_dict(r.to_dict()).hash() == r.hash()
    assert r.members()[0].config["model"] == {"width": 3}
    assert Recipe.from_dict(_recipe(FACTORY, {"width": 3})).hash() == r.hash()


def test_hf_directory_relative_to_the_recipe_file(tmp_path):
    T = pytest.importorskip("transformers")
    cfg = T.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=16, num_labels=10)
    T.ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_recipe({"hf": "vit"})))
    r = Recipe.from_file(tmp_path / "r.yaml")
    assert r.arch == f"hf:{(tmp_path / 'vit').resolve()}"
    z = zoo.build_zoo(r, tmp_path / "z", backend="serial", progress=False).open()
    m = z.members()[0]
    assert m.status == "ok" and 0.0 <= m.metrics["test_acc"] <= 1.0
    out = m.module()(torch.zeros(1, 1, 8, 8))
    assert out.logits.shape == (1, 10)


def test_factory_zoo_builds_and_feeds_the_checkpoint_flow(tmp_path):
    from weightspace.generate import RefArch, collect_checkpoints

    z = zoo.build_zoo(_recipe(FACTORY, {"width": 3}), tmp_path / "z", backend="serial", progress=False).open()
    m = z.members()[0]
    assert m.arch == FACTORY and isinstance(m.module()[1], nn.Linear)
    cs = collect_checkpoints(z)
    assert isinstance(cs.arch, RefArch) and len(cs) == 4
    res = runner.invoke(app, ["generate", "flow-train", str(z.path), str(tmp_path / "flow.safetensors"),
                              "--steps", "2", "--no-progress"])
    assert res.exit_code == 0 and FACTORY in res.output, res.output


@pytest.mark.parametrize("arch, model, says", [
    ("hf:missing_dir", {}, "no such directory"),  # relative to the recipe file
    ({"hf": "."}, {}, "no config.json"),
    (FACTORY, {"depth": 2}, "does not take these arguments"),
    ({"factory": FACTORY, "kwargs": {"width": 3}}, {"width": 4}, "given both"),
    ({"factory": FACTORY, "extra": 1}, {}, "unknown key"),
])
def test_bad_references_name_the_field(tmp_path, arch, model, says):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(arch, model)))
    with pytest.raises(RecipeError, match=says) as e:
        Recipe.from_file(path)
    assert str(path) in str(e.value) and e.value.field.split(".")[0] in ("arch", "model")
    res = runner.invoke(app, ["zoo", "build", str(path), str(tmp_path / "z"), "--backend", "serial"])
    assert res.exit_code == 2 and says in one_error_line(res.output)
    assert not (tmp_path / "z").exists()


def test_every_bad_reference_kind_is_a_recipe_error(tmp_path):
    for ref, _, says in bad_references(tmp_path, __name__)[:5]:  # an nn.Module cannot be written in a recipe
        with pytest.raises(RecipeError, match=says) as e:
            Recipe.from_dict(_recipe(ref))
        assert e.value.field == "arch" and "\n" not in str(e.value)


# ------------------------------------------------------------ loaders' arch=
def test_model_zoos_loader_takes_a_factory(tmp_path):
    from tests.zoo.test_model_zoos import ZooCNNLike, write_trial
    from zoo.loaders import load_model_zoos

    write_trial(tmp_path / "mz", "t0", 0)
    arch = f"{__name__}:zoo_cnn_like"
    members = list(load_model_zoos(tmp_path / "mz", arch=arch))  # the zoo's own code: no key_map
    assert members[0].config["arch"] == arch and len(members[0].checkpoints) == 3
    assert isinstance(members[0].module(), ZooCNNLike)
    with pytest.raises(ZooFormatError, match="has no 'nope'") as e:
        list(load_model_zoos(tmp_path / "mz", arch=f"{__name__}:nope"))
    assert e.value.field == "model::type"
    with pytest.raises(ZooFormatError, match="lacks tensor"):
        list(load_model_zoos(tmp_path / "mz", arch=FACTORY, model_kwargs={"width": 5}))


def zoo_cnn_like():
    from tests.zoo.test_model_zoos import ZooCNNLike

    return ZooCNNLike()


def test_import_options_are_the_loaders_own(tmp_path):
    from weightspace.errors import ConfigError
    from zoo.loaders import import_model_zoos, import_small_cnn_zoo

    with pytest.raises(ConfigError, match="unknown option 'stepz'.*did you mean 'steps'") as e:
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "out", stepz="final", progress=False)
    assert e.value.field == "stepz"
    with pytest.raises(ConfigError, match="missing a required argument: 'arch'"):
        import_model_zoos(tmp_path / "src", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
