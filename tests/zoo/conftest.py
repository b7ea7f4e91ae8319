"""Shared fixtures for the zoo tests: tiny, fast recipes."""

from __future__ import annotations

import pytest


def tiny_recipe_dict(num_members: int = 4, epochs: int = 2, **overrides) -> dict:
    """A random-search digits recipe whose members train in well under a second."""
    d = {
        "name": "tiny",
        "arch": "cnn_small",
        "model": {"width": 4, "depth": 2},
        "data": {"name": "digits", "split_seed": 0},
        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.01},
        "checkpoints": [0, epochs],
        "search": {
            "method": "random",
            "num_members": num_members,
            "seed": 0,
            "space": {
                "model.activation": ["relu", "tanh"],
                "train.lr": {"log_uniform": [0.001, 0.03]},
                "data.train_fraction": {"choice": [0.5, 1.0]},
            },
        },
    }
    d.update(overrides)
    return d


@pytest.fixture
def tiny_recipe():
    return tiny_recipe_dict()
