"""Counts and ranges in recipes, ``build_zoo`` and ``weightspace zoo build``
are refused with an error naming the recipe (or argument) and the field."""

from __future__ import annotations

import pytest
import yaml

import zoo
from weightspace.errors import ConfigError
from zoo.errors import RecipeError
from zoo.recipe import Recipe, load_recipe

from .conftest import tiny_recipe_dict
from .safety_helpers import assert_cli_refuses


def _space(d, key, value):
    d["search"]["space"][key] = value


def _grid(d, **search):
    d["search"] = {"method": "grid", "space": {"model.activation": ["relu"]}, **search}


BAD = [
    # (mutation, field named in the error, words of the message)
    (lambda d: d["train"].update(epochs=0), "train.epochs", ">= 1"),
    (lambda d: d["train"].update(epochs=-3), "train.epochs", ">= 1"),
    (lambda d: d["train"].update(epochs="ten"), "train.epochs", "integer"),
    (lambda d: d["train"].update(epochs=2.5), "train.epochs", "integer"),
    (lambda d: d["train"].update(batch_size=0), "train.batch_size", ">= 1"),
    (lambda d: d["train"].update(batch_size=True), "train.batch_size", "integer"),
    (lambda d: d["train"].update(eval_batch_size=-1), "train.eval_batch_size", ">= 1"),
    (lambda d: d["train"].update(lr=0), "train.lr", "> 0"),
    (lambda d: d["train"].update(lr=-0.1), "train.lr", ">= 0"),
    (lambda d: d["train"].update(lr=float("nan")), "train.lr", "finite"),
    (lambda d: d["train"].update(weight_decay=-1e-4), "train.weight_decay", ">= 0"),
    (lambda d: d["train"].update(momentum=-0.5), "train.momentum", ">= 0"),
    (lambda d: d["train"].update(grad_clip=0.0), "train.grad_clip", "> 0"),
    (lambda d: d["train"].update(init_scale=0), "train.init_scale", "> 0"),
    (lambda d: d["train"].update(lern_rate=0.1), "train.lern_rate", "unknown key"),
    (lambda d: d["data"].update(train_fraction=0.0), "data.train_fraction", "(0, 1]"),
    (lambda d: d["data"].update(train_fraction=1.5), "data.train_fraction", "<= 1"),
    (lambda d: d["data"].update(label_noise=-0.1), "data.label_noise", ">= 0"),
    (lambda d: d["data"].update(split_seed=-1), "data.split_seed", ">= 0"),
    (lambda d: d["model"].update(width=0), "model.width", "positive int"),
    (lambda d: d["model"].update(depth=-3), "model.depth", "positive int"),
    (lambda d: d["model"].update(dropout=1.0), "model.dropout", "[0, 1)"),
    (lambda d: d["search"].update(num_members=-3), "search.num_members", "positive int"),
    (lambda d: d["search"].update(num_members=2.0), "search.num_members", "positive int"),
    (lambda d: d["search"].update(num_members=10**9), "search.num_members", "at most"),
    (lambda d: d["search"].update(seed=-1), "search.seed", "non-negative"),
    (lambda d: d["search"].update(base_seed=-5), "search.base_seed", "non-negative"),
    (lambda d: d["search"].update(methd="grid"), "search.methd", "did you mean 'method'"),
    (lambda d: _grid(d, seeds=-3), "search.seeds", "positive int"),
    (lambda d: _grid(d, seeds=0), "search.seeds", "positive int"),
    (lambda d: _grid(d, seeds=[]), "search.seeds", "non-empty list"),
    (lambda d: _grid(d, seeds=[0, -1]), "search.seeds[1]", "non-negative"),
    (lambda d: _grid(d, seeds=[1, 1]), "search.seeds", "repeated seed"),
    (lambda d: _space(d, "train.lr", [0.01, -0.01]), "search.space.train.lr[1]", ">= 0"),
    (lambda d: _space(d, "train.lr", {"uniform": [-1.0, 0.1]}), "search.space.train.lr.uniform[0]", ">= 0"),
    (lambda d: _space(d, "train.batch_size", {"choice": [32, 0]}), "search.space.train.batch_size.choice[1]", ">= 1"),
    (lambda d: _space(d, "train.epochs", {"int_uniform": [0, 3]}), "search.space.train.epochs.int_uniform[0]", ">= 1"),
    (lambda d: _space(d, "train.epochs", {"uniform": [1, 3]}), "search.space.train.epochs", "int_uniform"),
    (lambda d: _space(d, "train.epochs", {"range": [-2, 3]}), "search.space.train.epochs.range", ">= 1"),
    (lambda d: _space(d, "model.width", [8, -8]), "search.space.model.width[1]", "positive int"),
    (lambda d: _space(d, "data.train_fraction", {"choice": [0.5, 0.0]}),
     "search.space.data.train_fraction.choice[1]", "(0, 1]"),
    (lambda d: _space(d, "seed", [0, -1]), "search.space.seed[1]", "non-negative"),
    (lambda d: _space(d, "model.width", {"range": [1, 10, 0]}), "search.space.model.width", "step must not be 0"),
    (lambda d: _space(d, "model.width", {"range": [10, 1]}), "search.space.model.width", "is empty"),
    (lambda d: _space(d, "model.width", {"range": [1, 10**12]}), "search.space.model.width", "more than"),
    (lambda d: _space(d, "model.width", {"int_uniform": [1.5, 4]}), "search.space.model.width", "integer bounds"),
    (lambda d: d.update(checkpoints={"every": 0}), "checkpoints.every", "positive int"),
    (lambda d: d.update(checkpoints={"evry": 2}), "checkpoints.evry", "did you mean 'every'"),
    (lambda d: d.update(name=""), "name", "non-empty string"),
]


@pytest.mark.parametrize("mutate, field, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_counts_and_ranges_name_the_source_and_field(mutate, field, words):
    d = tiny_recipe_dict()
    mutate(d)
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(d, source="my.yaml")
    assert e.value.path == "my.yaml" and e.value.field == field, str(e.value)
    assert words in str(e.value)
    assert isinstance(e.value, ConfigError)


def test_grid_that_expands_to_too_many_members():
    d = tiny_recipe_dict()
    d["checkpoints"] = "final"
    d["search"] = {"method": "grid", "space": {"model.width": {"range": [1, 1001]}, "train.epochs": {"range": [1, 1001]},
                                               "seed": {"range": [0, 1001]}}}
    with pytest.raises(RecipeError, match=r"\[search\.space\] the grid expands to"):
        Recipe.from_dict(d)


def test_valid_edge_values_are_accepted():
    d = tiny_recipe_dict()
    d["train"].update(epochs=1, batch_size=1, weight_decay=0.0, grad_clip=None, momentum=0)
    d["data"].update(train_fraction=1.0, label_noise=0.0)
    d["search"]["space"]["seed"] = [0, 3]
    d["checkpoints"] = [0, 1]
    r = Recipe.from_dict(d)
    assert len(r.members()) == 4
    d = tiny_recipe_dict()
    _grid(d, seeds=[0, 5])
    assert [m.seed for m in Recipe.from_dict(d).members()] == [0, 5]


def test_checkpoints_must_fit_the_shortest_searched_epochs():
    d = tiny_recipe_dict(epochs=4)
    d["checkpoints"] = [0, 4]
    d["search"]["space"]["train.epochs"] = [2, 4]
    with pytest.raises(RecipeError, match=r"\[checkpoints\] checkpoints \[4\] outside \[0, epochs=2\]"):
        Recipe.from_dict(d)


def test_recipe_file_errors_name_the_file(tmp_path):
    d = tiny_recipe_dict()
    d["search"] = {"method": "grid", "seeds": -3, "space": {"model.activation": ["relu"]}}
    p = tmp_path / "neg.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.path == str(p) and e.value.field == "search.seeds"
    bad = tmp_path / "binary.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecipeError, match=r"binary\.yaml: not a text file"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match=r"recipe file not found|no such recipe"):
        Recipe.from_file(tmp_path / "nope.yaml")
    (tmp_path / "adir.yaml").mkdir()
    with pytest.raises(RecipeError, match=r"adir\.yaml: is a directory"):
        Recipe.from_file(tmp_path / "adir.yaml")


@pytest.mark.parametrize("kwargs, field", [
    ({"max_members": -3}, "max_members"),
    ({"max_members": 0}, "max_members"),
    ({"workers": 0}, "workers"),
    ({"workers": -2}, "workers"),
    ({"max_members": 1.5}, "max_members"),
])
def test_build_zoo_refuses_bad_counts(tmp_path, kwargs, field):
    out = tmp_path / "z"
    with pytest.raises(ConfigError) as e:
        zoo.build_zoo(tiny_recipe_dict(num_members=1), out, backend="serial", progress=False, **kwargs)
    assert e.value.field == field and field in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize("args, option", [
    (["--max-members", "-3"], "--max-members"),
    (["--max-members", "0"], "--max-members"),
    (["--workers", "0"], "--workers"),
    (["-w", "-1"], "--workers"),
])
def test_cli_build_refuses_bad_counts(tmp_path, args, option):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(num_members=1)))
    out = tmp_path / "z"
    assert_cli_refuses(["zoo", "build", str(recipe), str(out), "--backend", "serial", "--no-progress", *args], option, out)
