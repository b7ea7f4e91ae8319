"""A tiny digits zoo shared by the predictor tests (built once per session).

48 ``cnn_small`` (width 8, depth 2) members, 4 epochs, checkpoints after
epochs 1 and 4, with learning rate, activation, label noise and train
fraction varied so that test accuracy spreads from chance to ~0.85.
"""

from __future__ import annotations

import pytest

TINY_RECIPE = {
    "name": "predict_tiny",
    "arch": "cnn_small",
    "model": {"width": 8, "depth": 2},
    "data": {"name": "digits", "split_seed": 0},
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.01},
    "checkpoints": [1, 4],
    "search": {
        "method": "random",
        "num_members": 48,
        "seed": 0,
        "space": {
            "model.activation": ["relu", "tanh"],
            "train.lr": {"log_uniform": [0.003, 0.05]},
            "data.label_noise": {"choice": [0.0, 0.2, 0.5]},
            "data.train_fraction": {"choice": [0.1, 0.3, 1.0]},
        },
    },
}


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    import zoo

    report = zoo.build_zoo(TINY_RECIPE, tmp_path_factory.mktemp("predict") / "zoo", backend="serial", progress=False)
    return report.open()


@pytest.fixture(scope="session")
def tiny_dataset(tiny_zoo):
    from weightspace.predict import zoo_dataset

    return zoo_dataset(tiny_zoo, "test_acc")


@pytest.fixture(scope="session")
def tiny_split(tiny_dataset):
    from weightspace.predict import random_split

    return random_split(tiny_dataset, (0.75, 0.0, 0.25), seed=0)
