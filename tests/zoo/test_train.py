import math

import numpy as np
import pytest
import torch

import zoo
from zoo.errors import RecipeError
from zoo.recipe import Recipe
from zoo.store import state_dict_sha256
from zoo.train import member_streams, train_member

from .conftest import tiny_recipe_dict


def _spec(**over):
    return Recipe.from_dict(tiny_recipe_dict(**over)).members()[0]


def test_training_is_deterministic_and_leaves_global_rng():
    spec = _spec()
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    a = train_member(spec)
    assert torch.equal(torch.rand(3), expected_next)
    b = train_member(spec)
    assert [state_dict_sha256(c.state_dict) for c in a.checkpoints] == [
        state_dict_sha256(c.state_dict) for c in b.checkpoints
    ]
    assert a.metrics["test_acc"] == b.metrics["test_acc"]


def test_different_seeds_give_different_members():
    specs = Recipe.from_dict(tiny_recipe_dict(num_members=2)).members()
    a, b = (train_member(s) for s in specs)
    assert state_dict_sha256(a.checkpoints[-1].state_dict) != state_dict_sha256(b.checkpoints[-1].state_dict)


def test_init_checkpoint_equals_registry_init_with_member_seed():
    spec = _spec()
    res = train_member(spec)
    ref = zoo.create_model("cnn_small", seed=spec.seed, **spec.config["model"]).state_dict()
    assert res.checkpoints[0].epoch == 0
    for k, v in ref.items():
        assert np.array_equal(res.checkpoints[0].state_dict[k], v.numpy())


def test_checkpoints_and_metrics_recorded():
    spec = _spec(epochs=3)
    spec.config["checkpoints"] = [0, 1, 3]
    res = train_member(spec)
    assert [c.epoch for c in res.checkpoints] == [0, 1, 3]
    for c in res.checkpoints:
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gap_acc", "gap_loss"):
            assert k in c.metrics and math.isfinite(c.metrics[k])
        assert c.metrics["gap_acc"] == pytest.approx(c.metrics["train_acc"] - c.metrics["test_acc"])
    assert res.checkpoints[0].step == 0 and res.checkpoints[-1].step > res.checkpoints[1].step
    assert res.metrics["wall_time"] > 0 and res.metrics["epochs_trained"] == 3
    # training actually learned something on digits
    assert res.checkpoints[-1].metrics["train_loss"] < res.checkpoints[0].metrics["train_loss"]


def test_label_noise_and_train_fraction_are_member_level():
    from zoo.datasets import load_dataset
    from zoo.train import _member_data

    ds = load_dataset("digits")
    streams = member_streams(5)
    x, y = _member_data(ds, {"train_fraction": 0.5, "label_noise": 0.3}, streams)
    assert len(x) == round(0.5 * len(ds.x_train))
    # recover which rows were kept, then count flipped labels
    keep = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(streams["subset"]))
    keep = keep[: len(x)].sort().values
    flipped = (ds.y_train[keep] != y).float().mean().item()
    assert 0.2 < flipped < 0.4
    x2, y2 = _member_data(ds, {"train_fraction": 0.5, "label_noise": 0.3}, member_streams(6))
    assert not torch.equal(y, y2)


def test_divergence_is_recorded_not_raised():
    d = tiny_recipe_dict(epochs=3)
    d["search"] = {"method": "grid"}  # no search space: the fixed lr below applies
    d["train"].update(init_scale=1e40)  # float32 overflow: inf weights, NaN loss
    res = train_member(Recipe.from_dict(d).members()[0])
    assert res.status == "diverged"
    assert res.checkpoints[-1].epoch == res.metrics["epochs_trained"] <= 3


def test_inr_member_reports_psnr_and_label():
    d = {
        "name": "inr", "arch": "siren", "data": {"name": "inr_digits", "index": 7},
        "train": {"epochs": 30, "batch_size": 64, "lr": 1e-3}, "checkpoints": [0, 30],
    }
    res = train_member(Recipe.from_dict(d).members()[0])
    assert res.extra == {"label": 7}
    assert res.checkpoints[-1].metrics["train_psnr"] > res.checkpoints[0].metrics["train_psnr"]
    assert "test_acc" not in res.metrics and "gap_psnr" in res.metrics


def test_bad_training_option_is_a_recipe_error():
    d = tiny_recipe_dict()
    d["train"]["optimizer"] = "lbfgs"
    with pytest.raises(RecipeError, match="optimizer"):
        train_member(Recipe.from_dict(d).members()[0])


def test_evaluate_model_and_its_deprecated_alias():
    import zoo.train as zt

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    want = zt.evaluate_model(model, x, y, "classification", batch_size=4)
    assert set(want) == {"loss", "acc"} and 0.0 <= want["acc"] <= 1.0
    with pytest.warns(DeprecationWarning, match="evaluate_model"):
        assert zt.evaluate(model, x, y, "classification", 4) == want
