import pytest

import zoo
from zoo.errors import RecipeError
from zoo.recipe import Recipe, load_recipe

from .conftest import tiny_recipe_dict


def test_shipped_recipes_load_and_expand():
    names = zoo.list_recipes()
    assert {"digits_cnn_small", "mnist1d_cnn1d", "siren_digits_inr"} <= set(names)
    r = load_recipe("digits_cnn_small")
    members = r.members()
    assert len(members) == 100
    assert r.arch == "cnn_small" and r.data["name"] == "digits"
    assert len({m.member_id for m in members}) == 100
    assert members[0].config["checkpoints"] == [0, 1, 2, 5, 10]
    assert len(load_recipe("siren_digits_inr").members()) == 100


def test_member_configs_are_complete_and_explicit(tiny_recipe):
    m = Recipe.from_dict(tiny_recipe).members()[0]
    cfg = m.config
    assert set(cfg) == {"arch", "model", "data", "train", "seed", "checkpoints"}
    # architecture defaults are resolved into the config
    assert cfg["model"]["num_classes"] == 10 and cfg["model"]["width"] == 4
    # training defaults too
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["weight_decay"] == 0.0
    assert m.member_id.startswith("00000-") and m.config_hash.startswith(m.member_id[6:])


def test_random_members_do_not_depend_on_num_members():
    small = Recipe.from_dict(tiny_recipe_dict(num_members=3)).members()
    big = Recipe.from_dict(tiny_recipe_dict(num_members=7)).members()
    assert [m.member_id for m in small] == [m.member_id for m in big[:3]]
    assert [m.seed for m in big] == list(range(7))
    # and the sampled values actually vary
    assert len({m.config["train"]["lr"] for m in big}) == 7


def test_recipe_hash_ignores_size_only_when_asked():
    a = Recipe.from_dict(tiny_recipe_dict(num_members=3))
    b = Recipe.from_dict(tiny_recipe_dict(num_members=5))
    assert a.hash() != b.hash()
    assert a.hash(ignore_size=True) == b.hash(ignore_size=True)


def test_grid_expansion_with_seeds():
    d = tiny_recipe_dict()
    d["search"] = {"method": "grid", "seeds": 2, "base_seed": 10,
                   "space": {"model.activation": ["relu", "tanh", "gelu"], "train.lr": {"grid": [0.1, 0.01]}}}
    ms = Recipe.from_dict(d).members()
    assert len(ms) == 3 * 2 * 2
    combos = {(m.config["model"]["activation"], m.config["train"]["lr"], m.seed) for m in ms}
    assert len(combos) == 12
    assert {m.seed for m in ms} == {10, 11}


def test_range_and_int_uniform():
    d = tiny_recipe_dict()
    d["search"] = {"method": "grid", "space": {"data.split_seed": {"range": [0, 4]}}}
    assert [m.config["data"]["split_seed"] for m in Recipe.from_dict(d).members()] == [0, 1, 2, 3]
    d["search"] = {"method": "random", "num_members": 20, "space": {"model.width": {"int_uniform": [2, 5]}}}
    widths = {m.config["model"]["width"] for m in Recipe.from_dict(d).members()}
    assert widths <= {2, 3, 4, 5} and len(widths) > 1


def test_round_trip_yaml_and_toml(tmp_path, tiny_recipe):
    r = Recipe.from_dict(tiny_recipe)
    p = tmp_path / "r.yaml"
    p.write_text(r.to_yaml())
    r2 = Recipe.from_file(p)
    assert r2.hash() == r.hash()
    assert [m.member_id for m in r2.members()] == [m.member_id for m in r.members()]
    t = tmp_path / "r.toml"
    t.write_text(
        'name = "t"\narch = "mlp"\ncheckpoints = "final"\n[model]\nhidden = [8]\n'
        '[data]\nname = "digits"\n[train]\nepochs = 1\n'
    )
    rt = load_recipe(t)
    assert rt.arch == "mlp" and rt.members()[0].config["model"]["hidden"] == [8]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(arch="no_such_net"), "arch.*unknown architecture"),
        (lambda d: d.update(bogus=1), "unknown top-level key"),
        (lambda d: d["data"].update(name="imagenet"), "data.name.*unknown dataset"),
        (lambda d: d["train"].update(learning_rate=0.1), "unknown key.*train"),
        (lambda d: d["model"].update(wdith=3), "model.*unknown argument"),
        (lambda d: d["search"]["space"].update({"lr": [0.1]}), "must start with"),
        (lambda d: d["search"]["space"].update({"train.lr": {"uniform": [1, 0]}}), "bad bounds"),
        (lambda d: d["search"]["space"].update({"train.lr": {"normal": [0, 1]}}), "one-key mapping"),
        (lambda d: d["search"].update(num_members=0), "num_members"),
        (lambda d: d.update(checkpoints=[0, 99]), "outside"),
        (lambda d: d.pop("arch"), "missing required field 'arch'"),
    ],
)
def test_malformed_recipes_name_the_field(tiny_recipe, mutate, match):
    mutate(tiny_recipe)
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict(tiny_recipe, source="my.yaml")


def test_grid_rejects_continuous_distributions(tiny_recipe):
    tiny_recipe["search"]["method"] = "grid"
    with pytest.raises(RecipeError, match="grid search needs a list"):
        Recipe.from_dict(tiny_recipe)


def test_missing_recipe_file_is_clear(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(bad)


def test_checkpoint_specs():
    d = tiny_recipe_dict(epochs=6)
    d["checkpoints"] = {"every": 4}
    assert Recipe.from_dict(d).members()[0].config["checkpoints"] == [0, 4, 6]
    d["checkpoints"] = "all"
    assert Recipe.from_dict(d).members()[0].config["checkpoints"] == list(range(7))
    d["checkpoints"] = "final"
    assert Recipe.from_dict(d).members()[0].config["checkpoints"] == [6]
